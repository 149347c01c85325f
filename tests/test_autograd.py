"""Reverse mode: topological order, accumulation, graph freeing, no_grad, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import convgrad as cg
from convgrad.errors import GradError


def test_gradient_of_a_tensor_used_twice_is_the_sum_of_both_paths():
    x = cg.tensor([2.0, -3.0], requires_grad=True)
    (x * x + x).sum().backward()  # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(x.grad.data, [5.0, -5.0])


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    w = cg.tensor([1.0, 2.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_allclose(w.grad.data, [6.0, 6.0])


def test_diamond_graph_visits_every_node_once():
    a = cg.tensor(1.5, requires_grad=True)
    b = a * 2
    c = b * b + b.exp() * b  # b used three times
    c.backward()
    bv = 3.0
    np.testing.assert_allclose(a.grad.item(), 2 * (2 * bv + np.exp(bv) * (bv + 1)), rtol=1e-6)


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = cg.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert np.isclose(x.grad.item(), 1.0001**5000)


def test_backward_twice_through_a_freed_graph_is_refused_unless_retained():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, [4.0, 8.0])
    with pytest.raises(GradError, match="second time"):
        y.backward()


def test_non_scalar_backward_needs_a_gradient_of_the_right_shape():
    y = cg.tensor([1.0, 2.0], requires_grad=True) * 2
    with pytest.raises(GradError, match="scalar outputs"):
        y.backward()
    with pytest.raises(GradError, match="shape"):
        y.backward(np.ones(3))


def test_no_grad_records_nothing_and_restores_the_mode():
    x = cg.tensor([1.0], requires_grad=True)
    with cg.no_grad():
        y = x * 2
        assert not cg.is_grad_enabled()
    assert cg.is_grad_enabled() and not y.requires_grad and y.grad_fn is None

    @cg.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad


def test_leaf_gradients_never_share_memory():
    a = cg.tensor([1.0], requires_grad=True)
    b = cg.tensor([1.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 10
    assert b.grad.item() == 1.0


def test_detach_cuts_the_graph_and_integer_tensors_cannot_require_grad():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    assert not (x.detach() * 2).requires_grad
    with pytest.raises(GradError, match="floating point"):
        cg.tensor([1, 2], requires_grad=True)


def test_dtypes_follow_pytorch_rules():
    assert cg.tensor([1.0, 2.0]).dtype == np.float32
    assert cg.tensor(np.zeros(2)).dtype == np.float64
    assert cg.tensor([1, 2]).dtype == np.int64
    assert (cg.tensor([1.0]) * 2.5).dtype == np.float32  # python scalars don't promote
    assert (cg.tensor([1.0]) + cg.tensor(np.ones(1))).dtype == np.float64


def test_tensor_surface_behaves_like_torch():
    t = cg.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    values, indices = t.max(dim=1)
    assert values.tolist() == [5.0, 6.0] and indices.tolist() == [1, 2]
    assert t.argmax().item() == 5 and t.shape == (2, 3) and t.numel() == 6
    assert np.asarray(t).shape == (2, 3) and (t == t).data.all()
    assert t[1, 2].item() == 6.0 and t.T.shape == (3, 2)
    assert "grad_fn" in repr(cg.tensor([1.0], requires_grad=True) * 2)
    with pytest.raises(GradError, match="detach"):
        cg.tensor([1.0], requires_grad=True).numpy()


def test_a_gradient_is_adopted_without_a_copy_only_when_nothing_else_holds_it():
    # the caller's seed flows unchanged to the leaf (w + 0): w.grad must not alias it
    w = cg.tensor(np.zeros(3), requires_grad=True)
    seed = np.array([1.0, 2.0, 3.0])
    (w + 0).backward(seed)
    assert not np.shares_memory(w.grad.data, seed)
    (w + 0).backward(seed)  # in-place accumulation must leave the caller's array alone
    np.testing.assert_array_equal(seed, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(w.grad.data, [2.0, 4.0, 6.0])
    # one array handed to two leaves (a + b): each leaf gets its own
    a = cg.tensor(np.zeros(4), requires_grad=True)
    b = cg.tensor(np.zeros(4), requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    (a * 2 + b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [3.0] * 4)
    np.testing.assert_array_equal(b.grad.data, [2.0] * 4)
    # a fresh gradient nobody else holds becomes .grad itself (no copy)
    made: list[int] = []

    class Double(cg.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, grad):
            out = grad * 2
            made.append(id(out))
            return out

    v = cg.tensor(np.ones(5), requires_grad=True)
    Double.apply(v).sum().backward()
    assert id(v.grad.data) == made[0]
