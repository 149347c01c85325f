"""Convolution (cross-correlation, as in every deep-learning library) forward/backward in NumPy.

The input is laid out channels-last; its patch matrix is built with one strided copy of a
zero-copy view (:func:`conv_arith.patch_view`) and multiplied by the reshaped weight in one BLAS
call. The patch matrix is kH*kW times the size of the input (160 MB for the Deep MNIST network's
second layer at batch 256), so the batch is processed in slices of whole images whose patch
matrices stay under :data:`PATCH_BYTES_LIMIT`, spread over convgrad's threads
(:mod:`convgrad.parallel`), each thread copying into its own reused buffer: one strided copy
and one single-threaded BLAS call per slice, never a Python loop over pixels. The slices are
cache blocks, sized in bytes: 13 images for the first Deep MNIST layer (78 KB of patches per
image), one image for the second (627 KB per image), each still a whole image's matrix product.
conv1d is conv2d with a height-1 image.

Every kernel here is told a :class:`~convgrad.kernels.conv_arith.ConvGeometry` (sizes, stride,
padding, dilation, groups), never another op's cache, so each serves twice: the convolution's
input gradient is the transposed convolution's forward, the convolution's forward is the
transposed convolution's input gradient, and the weight gradient serves both with the roles of
input and output swapped.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from convgrad import parallel
from convgrad.kernels import winograd
from convgrad.kernels.conv_arith import (
    ConvGeometry,
    Pads,
    col2im,
    nchw_to_nhwc,
    nhwc_to_nchw,
    pad_nhwc,
    patch_view,
)
from convgrad.parallel import parallel_for, split_batch, thread_buffer

PATCH_BYTES_LIMIT = 1 * 2**20
"""Largest patch matrix (bytes) built at once; larger batches are sliced by whole images.

A slice's patch matrix is written by the copy and read back by the BLAS call right after, so it
should stay in the core's own cache. Measured on a 2-core machine (1 MB L2 per core), Deep MNIST
conv1 + conv2 forward and backward, median of 12: batch 50: 105 / 68 / 64 / 71 / 88 ms with
0.5 / 1 / 1.5 / 2 / 4 MB slices; batch 256: 268 / 256 / 266 / 270 / 304 ms. It also bounds the
memory a convolution needs beyond its input and output."""


DW_BLOCKS = 16
"""The weight gradient's sum over slices is split into at most this many blocks (the units of
work of the threads)."""


def batch_slices(n: int, bytes_per_image: int) -> list[slice]:
    """Split range(n) into the fewest slices whose patch matrices fit PATCH_BYTES_LIMIT."""
    return split_batch(n, bytes_per_image, PATCH_BYTES_LIMIT)


class ConvCache(NamedTuple):
    """What conv2d_backward needs from the forward pass."""

    xp: np.ndarray  # padded channels-last input (N, H_p, W_p, C_in); patches are rebuilt from it
    weight: np.ndarray  # (C_out, C_in/groups, kH, kW)
    geometry: ConvGeometry
    has_bias: bool


class ConvTransposeCache(NamedTuple):
    """What conv_transpose2d_backward needs from the forward pass."""

    x: np.ndarray  # the input, channels-last and C-contiguous (N, H, W, C_in)
    weight: np.ndarray  # (C_in, C_out/groups, kH, kW)
    geometry: ConvGeometry  # of the convolution this one transposes
    has_bias: bool


def _weight_matrix(weight: np.ndarray, groups: int) -> np.ndarray:
    """(C_out, C_in/G, kH, kW) -> (G, kH*kW*C_in/G, C_out/G), rows ordered like patch columns."""
    c_out, c_in_g, kh, kw = weight.shape
    w = weight.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(0, 3, 4, 2, 1)
    return w.reshape(groups, kh * kw * c_in_g, c_out // groups)


class _Patches:
    """Patch matrices of slices of a padded NHWC batch, each one strided copy.

    One zero-copy view of the whole batch's patches is made up front; a slice of whole images
    is copied from it into a caller's buffer (reused for every slice: a fresh multi-MB array
    per slice comes with new pages, whose page faults cost as much as the copy itself).

    The copy's speed is set by its innermost contiguous run: kW*C values in a patch row, or W_out
    values along an image row (stride 1). With few channels (the first layer: C = 1, a run of 5)
    the matrix is built column-major, whose copy walks image rows; BLAS takes either order.
    """

    def __init__(self, xp: np.ndarray, geometry: ConvGeometry) -> None:
        n, c_in = xp.shape[0], xp.shape[3]
        kernel, stride, groups = geometry.kernel, geometry.stride, geometry.groups
        ho, wo = geometry.out_hw
        self.rows_per_image = ho * wo
        self.groups = groups
        image_bytes = _patch_bytes(c_in, xp.itemsize, geometry)
        self.parts = batch_slices(n, image_bytes)  # the slices, in images
        self.nbytes = n * image_bytes  # the whole batch's patch matrix
        images = max((part.stop - part.start for part in self.parts), default=0)
        self._buffer_size = images * image_bytes // xp.itemsize
        self._buffers = threading.local()  # one reused buffer per thread
        self._dtype = xp.dtype
        # (N, Ho, Wo, kH, kW, C)
        view = patch_view(xp, kernel, stride, geometry.dilation, geometry.out_hw)
        channel_run = kernel[1] * c_in if geometry.dilation[1] == 1 else c_in
        row_run = wo if stride[1] == 1 else 1
        self.column_major = groups == 1 and row_run > channel_run
        if groups > 1:  # (G, N, Ho, Wo, kH, kW, C/G)
            view = view.reshape(n, ho, wo, kernel[0], kernel[1], groups, c_in // groups)
            self.source, self.image_axis = view.transpose(5, 0, 1, 2, 3, 4, 6), 1
        elif self.column_major:  # (kH, kW, C, N, Ho, Wo) copied, seen as its transpose
            self.source, self.image_axis = view.transpose(3, 4, 5, 0, 1, 2), 3
        else:
            self.source, self.image_axis = view, 0

    def rows(self, images: slice) -> slice:
        """The rows of the (N*H_out*W_out)-row matrices (output, dout) that belong to images."""
        return slice(images.start * self.rows_per_image, images.stop * self.rows_per_image)

    def __call__(self, images: slice) -> np.ndarray:
        """The patch matrix of the images (one of self.parts), copied into this thread's buffer:
        valid until this thread's next call.

        Returns:
            (M, kH*kW*C) for groups == 1, else (G, M, kH*kW*C/G); M = images * H_out*W_out.
        """
        scratch = thread_buffer(self._buffers, self._buffer_size, self._dtype)
        source = self.source[(slice(None),) * self.image_axis + (images,)]
        target = scratch[: source.size].reshape(source.shape)
        parallel.copyto(target, source)
        m = (images.stop - images.start) * self.rows_per_image
        if self.groups > 1:
            return target.reshape(self.groups, m, -1)
        return target.reshape(-1, m).T if self.column_major else target.reshape(m, -1)


def _patch_bytes(channels: int, itemsize: int, geometry: ConvGeometry) -> int:
    """Bytes of one image's rows of the patch matrix of a channels-deep input."""
    (ho, wo), (kh, kw) = geometry.out_hw, geometry.kernel
    return ho * wo * kh * kw * channels * itemsize


def _correlate_nhwc(
    xp: np.ndarray,
    weight: np.ndarray,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """Cross-correlate a padded NHWC input with an NCHW-ordered weight: the convolution's
    forward, and the transposed convolution's input gradient.

    Args:
        xp: (N, H_p, W_p, C_in), C-contiguous, already padded by geometry.pads.
        weight: (C_out, C_in/G, kH, kW).
        geometry: the convolution's; only the first out_hw rows and columns are computed.
        bias: (C_out,) or None, added to each slice while it is in the cache.

    Returns:
        (N*H_out*W_out, C_out): row (n, y, x) = patch(n, y, x) @ W_mat (+ bias).
    """
    c_out = weight.shape[0]
    if winograd.applies(geometry, xp.shape[3], c_out, xp.shape[0]):
        return winograd.correlate(xp, weight, geometry, bias)
    groups = geometry.groups
    wmat = _weight_matrix(weight, groups)
    ho, wo = geometry.out_hw
    out = np.empty((xp.shape[0] * ho * wo, c_out), dtype=np.result_type(xp, weight))
    patches = _Patches(xp, geometry)

    def correlate(part: slice) -> None:
        rows = patches.rows(part)
        cols = patches(part)
        if groups == 1:
            np.matmul(cols, wmat[0], out=out[rows])
        else:  # (G, M, C_out/G) -> (M, G, C_out/G): output channel g*C_out/G + o
            grouped = np.matmul(cols, wmat)
            out[rows].reshape(-1, groups, c_out // groups)[...] = grouped.transpose(1, 0, 2)
        if bias is not None:
            out[rows] += bias

    parallel_for(patches.parts, correlate, patches.nbytes, blas=True)
    return out


def _weight_grad(
    xp: np.ndarray,
    dout_mat: np.ndarray,
    weight_shape: tuple[int, ...],
    geometry: ConvGeometry,
    need_db: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The convolution's weight gradient, dW_mat = sum over slices of patches^T @ dout_mat, and
    (need_db) its bias gradient db = 1^T @ dout_mat, summed over blocks of slices.

    db is summed block by block beside dW, on the same threads, each block's rows of dout by one
    BLAS product with a vector of ones, the block sums added in order: NumPy's
    ``dout_mat.sum(axis=0)`` walks a (N*H_out*W_out, C_out) matrix row by row (one short vector
    add per row; 12.7 ms on one thread for Deep MNIST's first layer at batch 256, against 4.0 ms
    for one product with ones) and, adding in one running sum, loses more precision.

    Args:
        xp: the convolution's padded input (N, H_p, W_p, C_in), C-contiguous.
        dout_mat: the gradient of its output, (N*H_out*W_out, C_out), C-contiguous.
        weight_shape: (C_out, C_in/G, kH, kW).
        need_db: also return db (C_out,).

    Returns:
        dw (C_out, C_in/G, kH, kW) and db (C_out,) or None.
    """
    c_out, c_in_g, kh, kw = weight_shape
    if winograd.applies(geometry, xp.shape[3], c_out, xp.shape[0]):
        dout_nhwc = dout_mat.reshape(xp.shape[0], *geometry.out_hw, c_out)
        return winograd.weight_grad(xp, dout_nhwc, geometry, need_db)
    groups = geometry.groups
    patches = _Patches(xp, geometry)
    # dW is summed over slices: in blocks of consecutive slices (at most DW_BLOCKS, fixed
    # by the batch, not by the thread count), each block's sum computed on one thread,
    # then the block sums added in order: an order of summation the threads cannot change.
    blocks = parallel.split(len(patches.parts), DW_BLOCKS)
    partial: list[np.ndarray | None] = [None] * len(blocks)
    partial_db: list[np.ndarray | None] = [None] * len(blocks)

    def term(part: slice) -> np.ndarray:
        rows = patches.rows(part)
        cols = patches(part)
        if groups == 1:
            return np.matmul(cols.T, dout_mat[rows])[None]  # (1, kH*kW*C, C_out)
        dout_g = dout_mat[rows].reshape(-1, groups, c_out // groups).transpose(1, 0, 2)
        return np.matmul(cols.transpose(0, 2, 1), dout_g)  # (G, kH*kW*Cg, C_out/G)

    def block_sum(k: int) -> None:
        total = None  # stays None for the one empty block of an empty batch
        parts = patches.parts[blocks[k]]
        for part in parts:
            if total is None:
                total = term(part)
            else:
                total += term(part)
        partial[k] = total
        if need_db and parts:  # the block's rows are contiguous: one product with ones
            rows = slice(patches.rows(parts[0]).start, patches.rows(parts[-1]).stop)
            d = dout_mat[rows]
            partial_db[k] = np.matmul(np.ones(d.shape[0], dtype=d.dtype), d)

    parallel_for(range(len(blocks)), block_sum, patches.nbytes, blas=True)
    dtype = np.result_type(xp, dout_mat)
    dw_mat = np.zeros((groups, kh * kw * c_in_g, c_out // groups), dtype=dtype)
    for block in partial:  # empty for an empty batch: dW = 0
        if block is not None:
            dw_mat += block
    db = None
    if need_db:
        db = np.zeros(c_out, dtype=dout_mat.dtype)
        for block_db in partial_db:  # in block order, whatever thread computed each
            if block_db is not None:
                db += block_db
    dw = dw_mat.reshape(groups, kh, kw, c_in_g, c_out // groups).transpose(0, 4, 3, 1, 2)
    return np.ascontiguousarray(dw.reshape(c_out, c_in_g, kh, kw)), db


def _column_sums(dout_mat: np.ndarray) -> np.ndarray:
    """dout_mat.sum(axis=0) of a C-contiguous (M, C) matrix, as slices of 1^T @ dout_mat (see
    _weight_grad: NumPy's row-by-row axis-0 sum is several times slower and less precise)."""
    slices = split_batch(dout_mat.shape[0], dout_mat.strides[0], PATCH_BYTES_LIMIT)
    total = np.zeros(dout_mat.shape[1], dtype=dout_mat.dtype)
    if not slices:
        return total
    ones = np.ones(slices[0].stop - slices[0].start, dtype=dout_mat.dtype)
    for rows in slices:
        total += np.matmul(ones[: rows.stop - rows.start], dout_mat[rows])
    return total


def _input_grad(
    dout_nhwc: np.ndarray,
    weight: np.ndarray,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """The convolution's input gradient, and so the transposed convolution's forward.

    Two exact routes. The full correlation (one patch copy, one BLAS call per slice, no
    scatter) is the faster where it does no extra work; with stride s its dilated dout is
    mostly zeros and costs about s_h*s_w times the FLOPs of the adjoint route, which
    multiplies dout by W^T and scatter-adds the patch gradients back (col2im).

    Args:
        dout_nhwc: (N, H_out, W_out, C_out), C-contiguous.
        weight: (C_out, C_in/G, kH, kW).
        geometry: the convolution's.
        bias: (C_in,) or None, added to every pixel of the result (the transposed
            convolution's bias).

    Returns:
        dx (N, C_in, H, W), an NCHW view of channels-last memory.
    """
    h, wid = geometry.in_hw
    ho, wo = geometry.out_hw
    if h * wid <= 2 * ho * wo:
        return _input_grad_full(dout_nhwc, weight, geometry, bias)
    return _input_grad_col2im(dout_nhwc, weight, geometry, bias)


def _input_grad_col2im(
    dout_nhwc: np.ndarray,
    weight: np.ndarray,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """dx by the adjoint of im2col: dcols = dout_mat W^T (one BLAS call), then col2im.

    dcols[(n, y, x), (i, j, c)] = sum_o dout[n, o, y, x] w[o, c, i, j] is the gradient of each
    patch entry; col2im adds every patch entry back to the pixel it was copied from.
    """
    n, ho, wo, c_out = dout_nhwc.shape
    _, c_in_g, kh, kw = weight.shape
    groups = geometry.groups
    c_in = c_in_g * groups
    h, wid = geometry.in_hw
    (top, _), (left, _) = geometry.pads
    dout_mat = dout_nhwc.reshape(-1, c_out)
    rows_per_image = ho * wo
    wmat = _weight_matrix(weight, groups)  # (G, kH*kW*Cg, C_out/G)
    dtype = np.result_type(dout_nhwc, weight)
    dxp = np.empty((n, *geometry.padded_hw, c_in), dtype=dtype)
    image_bytes = _patch_bytes(c_in, dtype.itemsize, geometry)

    def scatter(part: slice) -> None:
        d = dout_mat[part.start * rows_per_image : part.stop * rows_per_image]
        if groups == 1:
            dcols = np.matmul(d, wmat[0].T)  # (M, kH*kW*C)
        else:
            d_g = d.reshape(-1, groups, c_out // groups).transpose(1, 0, 2)  # (G, M, C_out/G)
            dcols = np.matmul(d_g, wmat.transpose(0, 2, 1))  # (G, M, kH*kW*Cg)
            dcols = dcols.reshape(groups, -1, kh, kw, c_in_g).transpose(1, 2, 3, 0, 4)
            dcols = dcols.reshape(-1, kh * kw * c_in)
        target = dxp[part]
        col2im(dcols, target.shape, geometry.kernel, geometry.stride, geometry.dilation,
               geometry.out_hw, out=target)
        if bias is not None:
            target[:, top : top + h, left : left + wid, :] += bias

    parallel_for(batch_slices(n, image_bytes), scatter, n * image_bytes, blas=True)
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + wid, :])


def _input_grad_full(
    dout_nhwc: np.ndarray,
    weight: np.ndarray,
    geometry: ConvGeometry,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """dx as the full correlation of the stride-dilated dout with the flipped, transposed kernel."""
    n, ho, wo, c_out = dout_nhwc.shape
    _, c_in_g, kh, kw = weight.shape
    groups = geometry.groups
    c_in = c_in_g * groups
    h, wid = geometry.in_hw
    (top, _), (left, _) = geometry.pads
    sh, sw = geometry.stride
    dh, dw_ = geometry.dilation
    # D has the size that makes a valid correlation with the dilated kernel return (H, W).
    big_h, big_w = h + dh * (kh - 1), wid + dw_ * (kw - 1)
    d = np.zeros((n, big_h, big_w, c_out), dtype=dout_nhwc.dtype)
    # dout[y] sits at padded-input row y*s; shifted into D's frame: row (K-1)d - top + y*s.
    off_h, off_w = dh * (kh - 1) - top, dw_ * (kw - 1) - left
    ys = _valid_range(off_h, sh, ho, big_h)
    xs = _valid_range(off_w, sw, wo, big_w)
    if ys is not None and xs is not None:
        (y0, y1), (x0, x1) = ys, xs
        d[
            :,
            off_h + y0 * sh : off_h + (y1 - 1) * sh + 1 : sh,
            off_w + x0 * sw : off_w + (x1 - 1) * sw + 1 : sw,
            :,
        ] = dout_nhwc[:, y0:y1, x0:x1, :]
    # flip(w)^T: (C_in, C_out/G, kH, kW) with groups, w_t[g*Cg + c, o] = w[g*Og + o, c, ::-1, ::-1]
    og = c_out // groups
    w_t = weight[:, :, ::-1, ::-1].reshape(groups, og, c_in_g, kh, kw).transpose(0, 2, 1, 3, 4)
    w_t = w_t.reshape(c_in, og, kh, kw)
    full = ConvGeometry((big_h, big_w), (kh, kw), (1, 1), ((0, 0), (0, 0)), (dh, dw_), groups,
                        (h, wid))
    out = _correlate_nhwc(d, w_t, full, bias)
    return nhwc_to_nchw(out.reshape(n, h, wid, c_in))


def _valid_range(offset: int, stride: int, count: int, size: int) -> tuple[int, int] | None:
    """The range [a, b) of indices y < count with 0 <= offset + y*stride < size."""
    a = max(0, -(offset // stride))  # smallest y with offset + y*stride >= 0
    if size - 1 - offset < 0:
        return None
    b = min(count, (size - 1 - offset) // stride + 1)
    return (a, b) if a < b else None


# ------------------------------------------------------------------------------ convolution
def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    pads: Pads,
    dilation: tuple[int, int],
    groups: int,
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, ConvCache]:
    """2-D cross-correlation.

    ``out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, g(o)*C/G + c, y*s_h + i*d_h,
    x*s_w + j*d_w]``.

    Args:
        x: (N, C_in, H, W).
        weight: (C_out, C_in/groups, kH, kW).
        bias: (C_out,) or None.
        stride, dilation: (s_h, s_w), (d_h, d_w).
        pads: ((top, bottom), (left, right)), already resolved (by convgrad.nn).
        groups: G, divides C_in and C_out.
        out_hw: (H_out, W_out) from conv_arith.output_sizes.

    Returns:
        out (N, C_out, H_out, W_out) (an NCHW view of channels-last memory) and the cache.
    """
    n = x.shape[0]
    geometry = ConvGeometry(
        (x.shape[2], x.shape[3]), (weight.shape[2], weight.shape[3]), stride, pads, dilation,
        groups, out_hw,
    )
    xp = pad_nhwc(nchw_to_nhwc(x), pads)
    out = _correlate_nhwc(xp, weight, geometry, bias)
    out = nhwc_to_nchw(out.reshape(n, out_hw[0], out_hw[1], weight.shape[0]))
    # The patch matrix is kH*kW times larger than the input: keep the padded input and rebuild
    # the patches in backward (one extra strided copy) rather than hold them between passes.
    return out, ConvCache(xp, weight, geometry, bias is not None)


def conv2d_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True, need_dw: bool = True
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of conv2d.

    Weight (the patch-matrix Jacobian of the course: dL/dw = dout^T times the patches)::

        dw[o, c, i, j] = sum_{n, y, x} dout[n, o, y, x] * x_pad[n, c, y*s + i*d, x*s + j*d]
        i.e. dW_mat = cols^T @ dout_mat,  db[o] = sum_{n, y, x} dout[n, o, y, x]

    Input (a full convolution of dout with the flipped kernel)::

        dx_pad[n, c, u, v] = sum_{o, i, j} dout[n, o, (u - i*d)/s, (v - j*d)/s] * w[o, c, i, j]
        = correlate(D, flip(w)^T)[u, v] with D = dout dilated by s (s-1 zeros between entries)
        and padded by d(K-1) on each side; flip(w)^T[c, o, i, j] = w[o, c, K-1-i, K-1-j].

    Only the unpadded window of dx_pad is computed, so no work is spent on the padding border.

    Args:
        dout: (N, C_out, H_out, W_out).
        cache: from conv2d_forward.
        need_dx, need_dw: skip what nobody asked for (the first layer needs no dx).

    Returns:
        dx (N, C_in, H, W) or None, dw (C_out, C_in/G, kH, kW) or None, db (C_out,) or None.
    """
    n, c_out = dout.shape[:2]
    dout_nhwc = np.ascontiguousarray(nchw_to_nhwc(dout))
    dout_mat = dout_nhwc.reshape(-1, c_out)
    if need_dw:
        dw, db = _weight_grad(cache.xp, dout_mat, cache.weight.shape, cache.geometry,
                              need_db=cache.has_bias)
    else:
        dw, db = None, _column_sums(dout_mat) if cache.has_bias else None
    dx = _input_grad(dout_nhwc, cache.weight, cache.geometry) if need_dx else None
    return dx, dw, db


# ------------------------------------------------------------------- transposed convolution
def conv_transpose2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geometry: ConvGeometry,
) -> tuple[np.ndarray, ConvTransposeCache]:
    """2-D transposed convolution: the input gradient of the convolution described by geometry.

    With conv(u, w) that convolution, conv_transpose(x, w) is the x with
    <conv(u, w), x> = <u, conv_transpose(x, w)> for every u: each input pixel scatters
    weight[c, :, :, :] times its value onto a kH x kW window of the output, windows s apart::

        out[n, g*Og + o, y*s_h + i*d_h - top, v*s_w + j*d_w - left]
            += x[n, g*Cg + c, y, v] * w[g*Cg + c, o, i, j]     (then + b[o] everywhere)

    Args:
        x: (N, C_in, H_in, W_in), the convolution's output size (geometry.out_hw).
        weight: (C_in, C_out/groups, kH, kW): exactly a Conv2d(C_out, C_in) weight.
        bias: (C_out,) or None.
        geometry: of the convolution it transposes: in_hw = (H_out, W_out) of this op, pads =
            ((p_h, p_h), (p_w, p_w)), out_hw = (H_in, W_in).

    Returns:
        out (N, C_out, H_out, W_out), H_out = (H_in - 1)s - 2p + d(kH - 1) + output_padding + 1,
        an NCHW view of channels-last memory; and the cache.
    """
    x_nhwc = np.ascontiguousarray(nchw_to_nhwc(x))
    out = _input_grad(x_nhwc, weight, geometry, bias)
    return out, ConvTransposeCache(x_nhwc, weight, geometry, bias is not None)


def conv_transpose2d_backward(
    dout: np.ndarray, cache: ConvTransposeCache, need_dx: bool = True, need_dw: bool = True
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of conv_transpose2d: the convolution's forward and weight gradient.

    The op is linear in x with matrix A^T (A the convolution's matrix in the input), so
    dx = A dout: the convolution's forward applied to dout. In w, <dout, conv_transpose(x, w)>
    = <conv(dout, w), x> (the adjoint identity with u = dout), so dw is the convolution's weight
    gradient with dout in the input's place and x in the output gradient's::

        dx[n, c, y, v] = sum_{o, i, j} w[c, o, i, j] * dout_pad[n, o, y*s + i*d, v*s + j*d]
        dw[c, o, i, j] = sum_{n, y, v} x[n, c, y, v] * dout_pad[n, o, y*s + i*d, v*s + j*d]
        db[o] = sum_{n, y, v} dout[n, o, y, v]

    (with groups, c and o run over the channels of one group). Both are products with the patch
    matrix of the padded dout: dx = cols @ W_mat, dW_mat = cols^T @ x_mat.

    Args:
        dout: (N, C_out, H_out, W_out).
        cache: from conv_transpose2d_forward.
        need_dx, need_dw: skip what nobody asked for.

    Returns:
        dx (N, C_in, H_in, W_in) or None, dw (C_in, C_out/G, kH, kW) or None, db (C_out,) or None.
    """
    geometry, weight = cache.geometry, cache.weight
    n, ho, wo, c_in = cache.x.shape
    db = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    dx = dw = None
    if need_dx or need_dw:
        dout_p = pad_nhwc(nchw_to_nhwc(dout), geometry.pads)
        if need_dx:
            dx = _correlate_nhwc(dout_p, weight, geometry)
            dx = nhwc_to_nchw(dx.reshape(n, ho, wo, c_in))
        if need_dw:
            dw, _ = _weight_grad(dout_p, cache.x.reshape(-1, c_in), weight.shape, geometry)
    return dx, dw, db
