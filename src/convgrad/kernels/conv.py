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
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from convgrad import parallel
from convgrad.kernels.conv_arith import (
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
    x_shape: tuple[int, int, int, int]  # (N, C_in, H, W)
    pads: Pads
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]
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

    def __init__(
        self,
        xp: np.ndarray,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        out_hw: tuple[int, int],
    ) -> None:
        n, c_in = xp.shape[0], xp.shape[3]
        ho, wo = out_hw
        self.rows_per_image = ho * wo
        self.groups = groups
        image_bytes = _patch_bytes(xp, kernel, out_hw)
        self.parts = batch_slices(n, image_bytes)  # the slices, in images
        self.nbytes = n * image_bytes  # the whole batch's patch matrix
        images = max((part.stop - part.start for part in self.parts), default=0)
        self._buffer_size = images * image_bytes // xp.itemsize
        self._buffers = threading.local()  # one reused buffer per thread
        self._dtype = xp.dtype
        view = patch_view(xp, kernel, stride, dilation, out_hw)  # (N, Ho, Wo, kH, kW, C)
        channel_run = kernel[1] * c_in if dilation[1] == 1 else c_in
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


def _patch_bytes(xp: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Bytes of one image's rows of the patch matrix."""
    return out_hw[0] * out_hw[1] * kernel[0] * kernel[1] * xp.shape[3] * xp.itemsize


def _correlate_nhwc(
    xp: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    out_hw: tuple[int, int],
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """Cross-correlate a padded NHWC input with an NCHW-ordered weight.

    Args:
        xp: (N, H_p, W_p, C_in), C-contiguous.
        weight: (C_out, C_in/G, kH, kW).
        bias: (C_out,) or None, added to each slice while it is in the cache.

    Returns:
        (N*H_out*W_out, C_out): row (n, y, x) = patch(n, y, x) @ W_mat (+ bias).
    """
    c_out, _, kh, kw = weight.shape
    wmat = _weight_matrix(weight, groups)
    out = np.empty((xp.shape[0] * out_hw[0] * out_hw[1], c_out), dtype=np.result_type(xp, weight))
    patches = _Patches(xp, (kh, kw), stride, dilation, groups, out_hw)

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
        pads: ((top, bottom), (left, right)), already resolved (see conv_arith.resolve_padding).
        groups: G, divides C_in and C_out.
        out_hw: (H_out, W_out) from conv_arith.output_sizes.

    Returns:
        out (N, C_out, H_out, W_out) (an NCHW view of channels-last memory) and the cache.
    """
    n = x.shape[0]
    xp = pad_nhwc(nchw_to_nhwc(x), pads)
    out = _correlate_nhwc(xp, weight, stride, dilation, groups, out_hw, bias)
    out = nhwc_to_nchw(out.reshape(n, out_hw[0], out_hw[1], weight.shape[0]))
    # The patch matrix is kH*kW times larger than the input: keep the padded input and rebuild
    # the patches in backward (one extra strided copy) rather than hold them between passes.
    cache = ConvCache(xp, weight, x.shape, pads, stride, dilation, groups, out_hw, bias is not None)
    return out, cache


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
    w = cache.weight
    n, c_in, h, wid = cache.x_shape
    c_out, c_in_g, kh, kw = w.shape
    groups = cache.groups
    ho, wo = cache.out_hw
    m = n * ho * wo
    dout_nhwc = nchw_to_nhwc(dout)
    dout_mat = np.ascontiguousarray(dout_nhwc).reshape(m, c_out)

    db = dout_mat.sum(axis=0) if cache.has_bias else None
    dw = None
    if need_dw:
        patches = _Patches(cache.xp, (kh, kw), cache.stride, cache.dilation, groups, cache.out_hw)
        # dW is summed over slices: in blocks of consecutive slices (at most DW_BLOCKS, fixed
        # by the batch, not by the thread count), each block's sum computed on one thread,
        # then the block sums added in order: an order of summation the threads cannot change.
        blocks = parallel.split(len(patches.parts), DW_BLOCKS)
        partial: list[np.ndarray | None] = [None] * len(blocks)

        def term(part: slice) -> np.ndarray:
            rows = patches.rows(part)
            cols = patches(part)
            if groups == 1:
                return (cols.T @ dout_mat[rows])[None]  # (1, kH*kW*C, C_out)
            dout_g = dout_mat[rows].reshape(-1, groups, c_out // groups).transpose(1, 0, 2)
            return np.matmul(cols.transpose(0, 2, 1), dout_g)  # (G, kH*kW*Cg, C_out/G)

        def block_sum(k: int) -> None:
            total = None  # stays None for the one empty block of an empty batch
            for part in patches.parts[blocks[k]]:
                if total is None:
                    total = term(part)
                else:
                    total += term(part)
            partial[k] = total

        parallel_for(range(len(blocks)), block_sum, patches.nbytes, blas=True)
        dw_mat = np.zeros((groups, kh * kw * c_in_g, c_out // groups), dtype=dout_mat.dtype)
        for block in partial:  # empty for an empty batch: dW = 0
            if block is not None:
                dw_mat += block
        dw = dw_mat.reshape(groups, kh, kw, c_in_g, c_out // groups).transpose(0, 4, 3, 1, 2)
        dw = np.ascontiguousarray(dw.reshape(c_out, c_in_g, kh, kw))

    dx = None
    if need_dx:
        # Two exact routes. The full correlation (one patch copy, one BLAS call per slice, no
        # scatter) is the faster where it does no extra work; with stride s its dilated dout is
        # mostly zeros and costs about s_h*s_w times the FLOPs of the adjoint route, which
        # multiplies dout by W^T and scatter-adds the patch gradients back (col2im).
        if h * wid <= 2 * ho * wo:
            dx = _input_grad(dout_nhwc, cache)
        else:
            dx = _input_grad_col2im(dout_mat, cache)
    return dx, dw, db


def _input_grad_col2im(dout_mat: np.ndarray, cache: ConvCache) -> np.ndarray:
    """dx by the adjoint of im2col: dcols = dout_mat W^T (one BLAS call), then col2im.

    dcols[(n, y, x), (i, j, c)] = sum_o dout[n, o, y, x] w[o, c, i, j] is the gradient of each
    patch entry; col2im adds every patch entry back to the pixel it was copied from.
    """
    n, c_in, h, wid = cache.x_shape
    kh, kw = cache.weight.shape[2:]
    groups = cache.groups
    c_out = dout_mat.shape[1]
    rows_per_image = cache.out_hw[0] * cache.out_hw[1]
    wmat = _weight_matrix(cache.weight, groups)  # (G, kH*kW*Cg, C_out/G)
    dxp = np.empty(cache.xp.shape, dtype=dout_mat.dtype)
    image_bytes = _patch_bytes(cache.xp, (kh, kw), cache.out_hw)

    def scatter(part: slice) -> None:
        d = dout_mat[part.start * rows_per_image : part.stop * rows_per_image]
        if groups == 1:
            dcols = d @ wmat[0].T  # (M, kH*kW*C)
        else:
            d_g = d.reshape(-1, groups, c_out // groups).transpose(1, 0, 2)  # (G, M, C_out/G)
            dcols = np.matmul(d_g, wmat.transpose(0, 2, 1))  # (G, M, kH*kW*Cg)
            dcols = dcols.reshape(groups, -1, kh, kw, c_in // groups).transpose(1, 2, 3, 0, 4)
            dcols = dcols.reshape(-1, kh * kw * c_in)
        shape = (part.stop - part.start, *cache.xp.shape[1:])
        dxp[part] = col2im(dcols, shape, (kh, kw), cache.stride, cache.dilation, cache.out_hw)

    parallel_for(batch_slices(n, image_bytes), scatter, n * image_bytes, blas=True)
    (top, _), (left, _) = cache.pads
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + wid, :])


def _input_grad(dout_nhwc: np.ndarray, cache: ConvCache) -> np.ndarray:
    """dx as the full correlation of the stride-dilated dout with the flipped, transposed kernel."""
    w = cache.weight
    n, c_in, h, wid = cache.x_shape
    c_out, c_in_g, kh, kw = w.shape
    groups = cache.groups
    (top, _), (left, _) = cache.pads
    sh, sw = cache.stride
    dh, dw_ = cache.dilation
    ho, wo = cache.out_hw
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
    w_t = w[:, :, ::-1, ::-1].reshape(groups, og, c_in_g, kh, kw).transpose(0, 2, 1, 3, 4)
    w_t = w_t.reshape(c_in, og, kh, kw)
    out = _correlate_nhwc(d, w_t, (1, 1), (dh, dw_), groups, (h, wid))
    return nhwc_to_nchw(out.reshape(n, h, wid, c_in))


def _valid_range(offset: int, stride: int, count: int, size: int) -> tuple[int, int] | None:
    """The range [a, b) of indices y < count with 0 <= offset + y*stride < size."""
    a = max(0, -(offset // stride))  # smallest y with offset + y*stride >= 0
    if size - 1 - offset < 0:
        return None
    b = min(count, (size - 1 - offset) // stride + 1)
    return (a, b) if a < b else None
