"""The fast im2col paths against naive loops written from the definitions (no PyTorch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.kernels import conv as conv_f
from convgrad.nn._args import resolve_padding
from convgrad.reference import conv2d_naive, pool2d_naive


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]), st.tuples(st.integers(0, 3), st.integers(0, 3))
        )
    )
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
    return draw(st.integers(1, 2)), cin, cout, h, w, (kh, kw), stride, padding, dilation, groups


@settings(max_examples=60, deadline=None)
@given(conv_configs(), st.integers(0, 2**31 - 1))
def test_fast_conv2d_equals_naive_loops(config, seed):
    n, cin, cout, h, w, kernel, stride, padding, dilation, groups = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w))
    weight = rng.standard_normal((cout, cin // groups, *kernel))
    bias = rng.standard_normal(cout)
    pads = resolve_padding(padding, (h, w), kernel, stride, dilation)
    expected = conv2d_naive(x, weight, bias, stride, pads, dilation, groups)
    got = F.conv2d(
        cg.tensor(x), cg.tensor(weight), cg.tensor(bias), stride, padding, dilation, groups
    )
    np.testing.assert_allclose(got.data, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 1),
    st.integers(3, 9),
    st.integers(3, 9),
    st.sampled_from(["max", "avg"]),
    st.integers(0, 2**31 - 1),
)
def test_fast_pool2d_equals_naive_loops(kh, kw, sh, sw, pad, h, w, mode, seed):
    padding = (min(pad, kh // 2), min(pad, kw // 2))
    x = np.random.default_rng(seed).standard_normal((2, 3, h, w))
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    got = pool(cg.tensor(x), (kh, kw), (sh, sw), padding)
    expected = pool2d_naive(x, (kh, kw), (sh, sw), padding, mode)
    np.testing.assert_allclose(got.data, expected, rtol=1e-12, atol=1e-12)


def test_float32_is_the_default_and_is_preserved_through_a_network():
    model = cg.nn.Sequential(
        cg.nn.Conv2d(1, 2, 3),
        cg.nn.ReLU(),
        cg.nn.MaxPool2d(2),
        cg.nn.Flatten(),
        cg.nn.Linear(18, 3),
    )
    x = cg.tensor(np.random.default_rng(0).random((2, 1, 8, 8)).tolist())
    assert x.dtype == np.float32
    loss = F.cross_entropy(model(x), [0, 2])
    assert loss.dtype == np.float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, "same"), (2, 2, 1), (1, 2, "valid")])
def test_slicing_the_batch_under_a_memory_limit_changes_nothing(monkeypatch, groups, stride,
                                                                 padding):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 4, 9, 8))
    w, b = rng.standard_normal((6, 4 // groups, 3, 2)), rng.standard_normal(6)
    dout = None
    results = []
    for limit in (2**40, 1):  # one slice, then one image per slice
        monkeypatch.setattr(conv_f, "PATCH_BYTES_LIMIT", limit)
        xt, wt, bt = (cg.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, stride, padding, 1, groups)
        dout = rng.standard_normal(y.shape) if dout is None else dout
        y.backward(dout)
        results.append([y.data, xt.grad.data, wt.grad.data, bt.grad.data])
    assert len(conv_f.batch_slices(7, 1)) == 7  # the limit is 1 byte: one image per slice
    monkeypatch.setattr(conv_f, "PATCH_BYTES_LIMIT", 100)
    assert [s.stop - s.start for s in conv_f.batch_slices(7, 30)] == [3, 3, 1]
    assert len(conv_f.batch_slices(7, 14)) == 1
    for single, sliced in zip(*results, strict=True):
        np.testing.assert_allclose(sliced, single, rtol=1e-12, atol=1e-12)
