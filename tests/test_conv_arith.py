"""Index arithmetic: the output-size formula, TensorFlow 'same', and im2col/col2im adjointness."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.kernels.conv_arith import (
    col2im,
    conv_output_size,
    conv_transpose_output_size,
    im2col,
    same_padding,
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3)
)
def test_conv_output_size_formula_is_what_conv1d_returns(size, k, s, p, d):
    if size + 2 * p < d * (k - 1) + 1:
        return
    out = F.conv1d(cg.zeros(1, 1, size), cg.zeros(1, 1, k), None, s, p, d)
    assert (
        out.shape[-1]
        == (size + 2 * p - d * (k - 1) - 1) // s + 1
        == conv_output_size(size, k, s, p, d)
    )


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3),
    st.integers(0, 3),
)
def test_transposed_output_size_is_what_conv_transpose1d_returns_and_conv_maps_it_back(
    size, k, s, p, d, op
):
    op = op % max(s, d)  # torch's rule: output_padding < max(stride, dilation)
    out = conv_transpose_output_size(size, k, s, p, d, op)
    if out < 1:
        return
    y = F.conv_transpose1d(cg.zeros(1, 1, size), cg.zeros(1, 1, k), None, s, p, op, 1, d)
    assert y.shape[-1] == out == (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    if op < s:  # every output_padding below the stride names a size the conv maps back
        assert conv_output_size(out, k, s, p, d) == size


def test_valid_convolution_has_length_n_minus_k_plus_one():
    for n in range(1, 8):
        for k in range(1, n + 1):
            assert F.conv1d(cg.zeros(1, 1, n), cg.zeros(1, 1, k)).shape[-1] == n - k + 1


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 20), st.integers(1, 6), st.integers(1, 4), st.integers(1, 3))
def test_same_padding_gives_ceil_size_over_stride_with_the_extra_pixel_after(size, k, s, d):
    before, after = same_padding(size, k, s, d)
    assert after - before in (0, 1)
    assert conv_output_size(size, k, s, (before, after), d) == -(-size // s)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(3, 8),
    st.integers(3, 8),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 2),
    st.integers(0, 2**31 - 1),
)
def test_col2im_is_the_adjoint_of_im2col(n, c, h, w, k, s, d, s2, seed):
    if d * (k - 1) + 1 > min(h, w):
        return
    rng = np.random.default_rng(seed)
    out_hw = ((h - d * (k - 1) - 1) // s + 1, (w - d * (k - 1) - 1) // s2 + 1)
    x = rng.standard_normal((n, h, w, c))
    cols = im2col(x, (k, k), (s, s2), (d, d), out_hw)
    y = rng.standard_normal(cols.shape)
    back = col2im(y, x.shape, (k, k), (s, s2), (d, d), out_hw)
    assert np.isclose(np.sum(cols * y), np.sum(x * back), rtol=1e-10)
