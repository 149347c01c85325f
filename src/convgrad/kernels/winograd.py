"""Winograd's minimal filtering: stride-1 3x3 and 5x5 convolutions in fewer multiplications.

A 1-D correlation of a length-r filter g with a length-(m + r - 1) input tile d, giving m
outputs, is (Winograd, Lavin & Gray 2016)::

    y = A^T [ (G g) * (B^T d) ]          (* elementwise, a = m + r - 1 products instead of m*r)

and in 2-D, nesting it once per axis, ``Y = A^T [ (G g G^T) * (B^T d B) ] A``. A convolution
layer cuts its output into m x m tiles; each tile's a x a products, summed over the input
channels, are a matrix product per (xi, nu) position of the a x a grid::

    M[xi, nu][t, k] = sum_c V[xi, nu][t, c] U[xi, nu][c, k]     V = B^T d B,  U = G g G^T

so the patch matrix product (kH*kW multiply-adds per output and channel) becomes a*a / m^2 of
them: 36/4 = 9 instead of 25 for F(2x2, 5x5), 16/4 = 4 instead of 9 for F(2x2, 3x3), and the
patch matrix (kH*kW copies of the input) becomes a tile matrix (a*a/m^2 = 9 copies for 5x5).

The weight gradient is the same identity with the roles turned: dW[i, j] = sum over output
tiles of the correlation of a 6x6 input tile with the 2x2 tile of dout, i.e. F(5x5, 2x2)::

    dW = A'^T [ sum_t (G' dout_t G'^T) * (B'^T x_t B') ] A'      (a sum of products over tiles)

The transforms A, G, B come from the Cook-Toom construction on the points 0, 1, -1, 1/2, -2
and infinity (:func:`matrices`); they are exact in rationals and in floating point round
a little more than the direct sum (relative error about 2x float32's on Deep MNIST's second
layer, measured against float64).

Layouts: NHWC batches, the same contracts as the patch-matrix kernels in
:mod:`convgrad.kernels.conv`, which choose this route for the shapes where it was measured
faster (:func:`applies`). The batch is processed in blocks of whole images whose transformed
tiles stay in the core's cache, spread over convgrad's threads, each block a handful of
single-threaded BLAS calls: the tile copy, two transform products, the batched channel
products, two inverse transforms.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from functools import cache

import numpy as np

from convgrad import parallel
from convgrad.kernels.conv_arith import ConvGeometry, pad_nhwc
from convgrad.parallel import parallel_for, split_batch, thread_buffer

POINTS = (0, 1, -1, Fraction(1, 2), -2, 2, Fraction(-1, 2))
"""Interpolation points, taken in this order (plus infinity): small, and mixing magnitudes
above and below 1, which keeps the transforms' entries (and the rounding) small."""

TILE = 2
"""Outputs per tile and axis (m): F(2, r). Larger tiles save more products but round worse
(the transforms' entries grow with the number of points)."""

KERNELS = (3, 5)
"""Kernel extents (per axis) this route serves."""

MIN_CHANNELS = 32
"""Fewer input or output channels than this leave the channel products too small to pay for
the transforms: those convolutions keep the patch matrix (the first Deep MNIST layer, one input
channel, among them). Measured by benchmarks/bench_winograd.py on 2 cores, batch 50, 5x5
(patch matrix time / Winograd time, forward and weight gradient): 8 -> 16 channels 0.92-0.94
and 0.89-0.99, 16 -> 16 0.95-1.02 and 0.90-1.12 (break-even), 32 -> 64 and 64 -> 32 1.3-1.6
both."""

MIN_TILES = 512
"""Fewer 2x2 output tiles than this in the batch (about ten 14x14 images) leave too little work
to pay for the per-call weight transform and the tile transforms' fixed costs. Measured by
benchmarks/bench_winograd.py, Deep MNIST's second layer (49 tiles per image), 1 / 2 / 4 / 8 /
16 images: forward 0.80 / 1.06 / 1.00 / 1.06 / 1.59, weight gradient 0.66 / 0.74 / 0.65 / 0.79 /
1.16 times the patch matrix's speed."""

ENABLED = True
"""Use this route where it applies (False: always the patch matrix; for A/B measurements)."""

BLOCK_BYTES = 1 << 20
"""A block of images' largest transformed array stays under this (the core's cache)."""

_BUFFERS = threading.local()
"""Each thread's scratch for the blocks (a few MB), kept between calls: a fresh multi-MB array
per call on a worker thread comes with fresh pages to fault in."""

KEEP_BYTES = 16 << 20
"""A block scratch larger than this (a single large image's tiles) is the call's own, freed
with it, rather than kept in _BUFFERS for the life of the thread."""


def _scratch_store(elements: int, dtype: np.dtype) -> threading.local:
    """Where the blocks' scratch of this size lives: the kept per-thread store, or the call's."""
    return _BUFFERS if elements * dtype.itemsize <= KEEP_BYTES else threading.local()


_transform = np.matmul
"""The tile transforms' products (2 to 6 rows: memory-bound passes rather than arithmetic);
``np.matmul`` is kept for the channel products, which benchmarks/bench_layers.py times as
the layer's products."""

DW_BLOCKS = 16
"""The weight gradient's sum over image blocks is split into at most this many partial sums,
fixed by the batch (not the thread count) and added in order."""


@cache
def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transforms of F(m, r): A^T (m, a), G (a, r), B^T (a, a), a = m + r - 1, float64.

    With finite points p_0..p_{a-2} and infinity (Cook-Toom / Lagrange interpolation):
    A^T[i, j] = p_j^i, G[j, k] = p_j^k / prod_{l != j} (p_j - p_l), the last column of A^T and
    the last row of G pick the leading coefficient; B^T is the unique matrix that makes
    ``A^T[(G g) * (B^T d)]`` the correlation ``y_i = sum_k g_k d_{i+k}``, found by solving
    that identity (linear in B^T) exactly in rationals.
    """
    a = m + r - 1
    points = [Fraction(p) for p in POINTS[: a - 1]]
    at = [[Fraction(0)] * a for _ in range(m)]
    g = [[Fraction(0)] * r for _ in range(a)]
    for j, pj in enumerate(points):
        f = Fraction(1)
        for pl in points:
            if pl != pj:
                f *= pj - pl
        for i in range(m):
            at[i][j] = pj**i
        for k in range(r):
            g[j][k] = pj**k / f
    at[m - 1][a - 1] = Fraction(1)
    g[a - 1][r - 1] = Fraction(1)
    # sum_j at[i][j] g[j][k] bt[j][l] = [l == i + k]: for each l a linear system in bt[:, l]
    # whose equations are indexed by (i, k); a x a unknowns in all, consistent by construction.
    bt = [[Fraction(0)] * a for _ in range(a)]
    rows = [[at[i][j] * g[j][k] for j in range(a)] for i in range(m) for k in range(r)]
    for col in range(a):
        rhs = [Fraction(int(col == i + k)) for i in range(m) for k in range(r)]
        for j, value in enumerate(_solve(rows, rhs, a)):
            bt[j][col] = value
    result = tuple(np.array(mat, dtype=np.float64) for mat in (at, g, bt))
    for mat in result:
        mat.setflags(write=False)  # shared by every caller (cached)
    return result  # type: ignore[return-value]


def _solve(rows: list[list[Fraction]], rhs: list[Fraction], n: int) -> list[Fraction]:
    """The solution of a consistent, full-column-rank system (Gauss-Jordan in rationals)."""
    aug = [row[:] + [b] for row, b in zip(rows, rhs, strict=True)]
    pivot_rows = []
    row = 0
    for col in range(n):
        pivot = next((i for i in range(row, len(aug)) if aug[i][col] != 0), None)
        if pivot is None:
            raise ArithmeticError("winograd: the interpolation points give a singular system")
        aug[row], aug[pivot] = aug[pivot], aug[row]
        lead = aug[row][col]
        aug[row] = [v / lead for v in aug[row]]
        for i in range(len(aug)):
            if i != row and aug[i][col] != 0:
                factor = aug[i][col]
                aug[i] = [v - factor * w for v, w in zip(aug[i], aug[row], strict=True)]
        pivot_rows.append(row)
        row += 1
    if any(v != 0 for r_ in aug[row:] for v in r_):
        raise ArithmeticError("winograd: inconsistent transform system")
    return [aug[i][n] for i in pivot_rows]


def applies(geometry: ConvGeometry, c_in: int, c_out: int, batch: int) -> bool:
    """Whether this route computes the convolution of this geometry (and was measured faster):
    ungrouped, stride 1, no dilation, a 3 or 5 kernel extent on both axes, at least two output
    rows and columns, MIN_CHANNELS channels on both sides and MIN_TILES tiles in the batch."""
    kh, kw = geometry.kernel
    ho, wo = geometry.out_hw
    tiles = batch * -(-ho // TILE) * -(-wo // TILE)
    return (ENABLED and geometry.groups == 1 and geometry.stride == (1, 1)
            and geometry.dilation == (1, 1) and kh in KERNELS and kw in KERNELS
            and ho >= TILE and wo >= TILE and min(c_in, c_out) >= MIN_CHANNELS
            and tiles >= MIN_TILES)


class _Plan:
    """Tile grid of one convolution and its blocks of whole images."""

    def __init__(self, xp: np.ndarray, geometry: ConvGeometry, c_out: int,
                 dtype: np.dtype) -> None:
        (kh, kw), (ho, wo) = geometry.kernel, geometry.out_hw
        self.out_hw = (ho, wo)
        self.th, self.tw = -(-ho // TILE), -(-wo // TILE)
        self.ah, self.aw = TILE + kh - 1, TILE + kw - 1
        self.tiles_per_image = self.th * self.tw
        # The tiles overlap by r - 1; the last may reach past the padded input (odd H_out):
        # zero rows and columns are appended there (one copy, only for odd sizes).
        grow_h = max(0, TILE * self.th + kh - 1 - xp.shape[1])
        grow_w = max(0, TILE * self.tw + kw - 1 - xp.shape[2])
        xp = pad_nhwc(xp, ((0, grow_h), (0, grow_w))) if grow_h or grow_w else xp
        n, _, _, c = xp.shape
        # Blocks of whole images whose largest transformed array fits BLOCK_BYTES.
        per_image = self.ah * self.aw * self.tiles_per_image * max(c, c_out) * dtype.itemsize
        self.parts = split_batch(n, per_image, BLOCK_BYTES)
        images = max((p.stop - p.start for p in self.parts), default=0)
        self.largest = images * self.tiles_per_image  # tiles in the largest block
        s_n, s_h, s_w, s_c = xp.strides
        # (a_h, a_w, N, tH, tW, C): tile (ty, tx) of image n is xp[n, 2ty : 2ty+a_h, 2tx : ...]
        self.tiles = np.lib.stride_tricks.as_strided(
            xp, (self.ah, self.aw, n, self.th, self.tw, c),
            (s_h, s_w, s_n, TILE * s_h, TILE * s_w, s_c), writeable=False)

    def tile_matrix(self, images: slice, bt_h: np.ndarray, bt_w: np.ndarray,
                    scratch: np.ndarray) -> np.ndarray:
        """V = B^T d B of every input tile of the images: (a_h*a_w, T, C), T their tiles."""
        source = self.tiles[:, :, images]
        c = source.shape[-1]
        t = (images.stop - images.start) * self.tiles_per_image
        size = self.ah * self.aw * t * c
        d = scratch[:size].reshape(source.shape)
        np.copyto(d, source)
        half = scratch[size : 2 * size].reshape(self.ah, self.aw * t * c)
        _transform(bt_h, d.reshape(self.ah, -1), out=half)  # over the tile's rows
        v = d.reshape(self.ah, self.aw, t * c)  # d is consumed: reuse its memory
        _transform(bt_w, half.reshape(self.ah, self.aw, t * c), out=v)  # over its columns
        return v.reshape(self.ah * self.aw, t, c)


def _transform_weight(weight: np.ndarray, g_h: np.ndarray, g_w: np.ndarray) -> np.ndarray:
    """U = G w G^T per (output, input) channel pair, as (a_h*a_w, C_in, C_out): two products
    over the whole weight (one per axis), in the computation's dtype."""
    c_out, c_in, kh, kw = weight.shape
    rows = _transform(g_h, weight.transpose(2, 0, 1, 3).reshape(kh, -1))  # (a_h, K*C*kW)
    both = _transform(rows.reshape(-1, kw), g_w.T)  # (a_h*K*C, a_w)
    u = both.reshape(g_h.shape[0], c_out, c_in, g_w.shape[0]).transpose(0, 3, 2, 1)
    return np.ascontiguousarray(u).reshape(-1, c_in, c_out)


def correlate(
    xp: np.ndarray, weight: np.ndarray, geometry: ConvGeometry, bias: np.ndarray | None = None
) -> np.ndarray:
    """The convolution's forward (see conv._correlate_nhwc, same contract), by F(2x2, kHxkW).

    Args:
        xp: (N, H_p, W_p, C_in), padded by geometry.pads; geometry as accepted by applies().
        weight: (C_out, C_in, kH, kW).
        bias: (C_out,) or None.

    Returns:
        (N*H_out*W_out, C_out), row (n, y, x) = the output pixel's channels.
    """
    c_out, c_in, kh, kw = weight.shape
    dtype = np.result_type(xp, weight)
    plan = _Plan(xp, geometry, c_out, dtype)
    at_h, g_h, bt_h = (mat.astype(dtype) for mat in matrices(TILE, kh))
    at_w, g_w, bt_w = (mat.astype(dtype) for mat in matrices(TILE, kw))
    u = _transform_weight(weight.astype(dtype, copy=False), g_h, g_w)
    n = xp.shape[0]
    ho, wo = plan.out_hw
    out = np.empty((n, ho, wo, c_out), dtype=dtype)
    area = plan.ah * plan.aw
    per_tile = area * (2 * c_in + c_out) + TILE * TILE * c_out + TILE * plan.aw * c_out
    buffers = _scratch_store(plan.largest * per_tile, dtype)
    even = ho % TILE == 0 and wo % TILE == 0

    def block(images: slice) -> None:
        m = images.stop - images.start
        t = m * plan.tiles_per_image
        scratch = thread_buffer(buffers, t * per_tile, dtype)
        v = plan.tile_matrix(images, bt_h, bt_w, scratch)
        used = 2 * area * t * c_in
        prod = scratch[used : used + area * t * c_out].reshape(area, t, c_out)
        np.matmul(v, u, out=prod)  # the channel sums, one product per (xi, nu)
        used += area * t * c_out
        half = scratch[used : used + TILE * plan.aw * t * c_out].reshape(TILE, -1)
        _transform(at_h, prod.reshape(plan.ah, -1), out=half)
        used += half.size
        y = scratch[used : used + TILE * TILE * t * c_out].reshape(TILE, TILE, -1)
        _transform(at_w, half.reshape(TILE, plan.aw, -1), out=y)
        # y[u, v, (n, ty, tx, k)] is output pixel (2ty + u, 2tx + v) of image n
        tiles = y.reshape(TILE, TILE, m, plan.th, plan.tw, c_out).transpose(2, 3, 0, 4, 1, 5)
        target = out[images]
        if even:
            target.reshape(m, plan.th, TILE, plan.tw, TILE, c_out)[...] = tiles
        else:
            full = tiles.reshape(m, TILE * plan.th, TILE * plan.tw, c_out)
            target[...] = full[:, :ho, :wo]
        if bias is not None:
            target += bias

    parallel_for(plan.parts, block, out.nbytes * 4 + xp.nbytes, blas=True)
    return out.reshape(-1, c_out)


def weight_grad(
    xp: np.ndarray, dout_nhwc: np.ndarray, geometry: ConvGeometry, need_db: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The convolution's weight (and bias) gradient by F(kHxkW, 2x2) (see conv._weight_grad).

    dW[k, c, i, j] = sum_{n, y, x} dout[n, y, x, k] xp[n, y + i, x + j, c]: per 2x2 tile of dout
    a correlation of the 6x6 input tile under it with it, each summed over all tiles as one
    product per (xi, nu): M[xi, nu] = V'[xi, nu]^T U'[xi, nu] (C_in x T times T x C_out), then
    dW = A'^T M A'. An odd H_out or W_out is padded with zero rows of dout (adding nothing).

    Args:
        xp: (N, H_p, W_p, C_in), the forward's padded input.
        dout_nhwc: (N, H_out, W_out, C_out), C-contiguous.
        need_db: also return db[k] = sum dout[..., k].

    Returns:
        dw (C_out, C_in, kH, kW) and db (C_out,) or None.
    """
    kh, kw = geometry.kernel
    n, ho, wo, c_out = dout_nhwc.shape
    c_in = xp.shape[3]
    dtype = np.result_type(xp, dout_nhwc)
    plan = _Plan(xp, geometry, c_out, dtype)
    # F(r, 2): r outputs (the kernel taps) from a filter of 2 (the dout tile), a = r + 1
    at_h, g_h, bt_h = (mat.astype(dtype) for mat in matrices(kh, TILE))
    at_w, g_w, bt_w = (mat.astype(dtype) for mat in matrices(kw, TILE))
    dout_tiled = pad_nhwc(dout_nhwc, ((0, TILE * plan.th - ho), (0, TILE * plan.tw - wo)))
    s_n, s_h, s_w, s_k = dout_tiled.strides
    # (2, 2, N, tH, tW, C_out): entry (u, v) of dout tile (ty, tx) of image n
    dtiles = np.lib.stride_tricks.as_strided(
        dout_tiled, (TILE, TILE, n, plan.th, plan.tw, c_out),
        (s_h, s_w, s_n, TILE * s_h, TILE * s_w, s_k), writeable=False)
    area = plan.ah * plan.aw
    parts = plan.parts
    blocks = parallel.split(len(parts), DW_BLOCKS)
    partial: list[np.ndarray | None] = [None] * len(blocks)
    partial_db: list[np.ndarray | None] = [None] * len(blocks)
    per_tile = 2 * area * c_in + TILE * TILE * c_out + plan.ah * TILE * c_out + area * c_out
    buffers = _scratch_store(plan.largest * per_tile, dtype)

    def term(images: slice, scratch: np.ndarray) -> np.ndarray:
        m = images.stop - images.start
        t = m * plan.tiles_per_image
        v = plan.tile_matrix(images, bt_h, bt_w, scratch)  # (a*a, T, C_in)
        used = 2 * area * t * c_in
        g = scratch[used : used + TILE * TILE * t * c_out].reshape(dtiles[:, :, images].shape)
        np.copyto(g, dtiles[:, :, images])
        used += g.size
        half = scratch[used : used + plan.ah * TILE * t * c_out].reshape(plan.ah, TILE, -1)
        _transform(g_h, g.reshape(TILE, -1), out=half.reshape(plan.ah, -1))
        used += half.size
        ug = scratch[used : used + area * t * c_out].reshape(plan.ah, plan.aw, -1)
        _transform(g_w, half, out=ug)
        return np.matmul(v.transpose(0, 2, 1), ug.reshape(area, t, c_out))  # (a*a, C_in, C_out)

    def block_sum(k: int) -> None:
        chunk = parts[blocks[k]]
        if not chunk:
            return
        scratch = thread_buffer(buffers, plan.largest * per_tile, dtype)
        total = term(chunk[0], scratch)
        for images in chunk[1:]:
            total += term(images, scratch)
        partial[k] = total
        if need_db:
            rows = dout_nhwc[chunk[0].start : chunk[-1].stop].reshape(-1, c_out)
            partial_db[k] = np.matmul(np.ones(rows.shape[0], dtype=rows.dtype), rows)

    parallel_for(range(len(blocks)), block_sum, xp.nbytes * area + dout_nhwc.nbytes, blas=True)
    m_sum = np.zeros((area, c_in, c_out), dtype=dtype)
    for block in partial:  # in block order, whatever thread computed each
        if block is not None:
            m_sum += block
    # dW[i, j] = A'^T M A' over the (xi, nu) grid: (kH, kW, C_in, C_out)
    dw = np.einsum("ia,abck,jb->ijck", at_h, m_sum.reshape(plan.ah, plan.aw, c_in, c_out), at_w,
                   optimize=True)
    db = None
    if need_db:
        db = np.zeros(c_out, dtype=dout_nhwc.dtype)
        for block_db in partial_db:
            if block_db is not None:
                db += block_db
    return np.ascontiguousarray(dw.transpose(3, 2, 0, 1)), db
