"""Tests of convgrad.theory: every check passes, every check fails on a wrong claim, the Jacobian
explorer agrees with PyTorch's autograd, and the ``verify``/``jacobian`` commands behave."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.cli
from convgrad import theory
from convgrad.errors import ArgumentError, ShapeError
from convgrad.theory import CHECKS, Result, conv_definition, conv_jacobian, plot_jacobian
from convgrad.theory.base import engine_conv
from convgrad.theory.convolution import (
    DEFAULT_SHIFT_CASES,
    ShiftCase,
    full_cross_correlation,
)
from convgrad.theory.networks import EXPECTED_COUNTS

CLAIM_ORDER = ["equivariance", "output_size", "filter_jacobian", "input_gradient", "dead_relu",
               "param_counts", "matrix_calculus", "linear_network"]


@pytest.fixture(scope="module")
def all_results() -> list[tuple[theory.Check, Result]]:
    """Every check run once with its correct claim (shared: claim 8 alone takes seconds)."""
    return theory.run_checks()


@pytest.fixture(scope="module")
def results(all_results) -> dict[str, Result]:
    return {check.name: result for check, result in all_results}


# ------------------------------------------------------------------------------ registry
def test_registry_lists_the_eight_claims_in_course_order():
    assert list(CHECKS) == CLAIM_ORDER
    assert [check.number for check in CHECKS.values()] == list(range(1, 9))
    for check in CHECKS.values():
        assert check.statement and "\n" not in check.statement
        assert len(check.statement) <= 90
        assert check.formula


@pytest.mark.parametrize("name", CLAIM_ORDER)
def test_every_check_passes_with_the_true_claim(results, name):
    result = results[name]
    assert result.passed, result.details
    assert result.error <= result.tolerance
    assert result.details


def test_run_checks_selects_by_name_in_the_order_given():
    ran = theory.run_checks(["filter_jacobian", "output_size"])
    assert [check.name for check, _ in ran] == ["filter_jacobian", "output_size"]
    assert all(result.passed for _, result in ran)


def test_run_checks_refuses_an_unknown_name_and_lists_the_valid_ones():
    with pytest.raises(ArgumentError, match=r"unknown check 'nope'; valid names: equivariance, "
                                            r"output_size, .*linear_network"):
        theory.run_checks(["output_size", "nope"])


def test_a_crashing_claim_is_a_failure_with_its_traceback():
    def broken(*args):
        raise ZeroDivisionError("claim divides by zero")

    result = CHECKS["input_gradient"].run(input_gradient=broken)
    assert not result.passed and result.error == float("inf")
    assert "claim divides by zero" in result.details


def test_checks_leave_the_global_rng_as_they_found_it():
    cg.manual_seed(1234)
    before = cg.get_rng_state()
    CHECKS["dead_relu"].run()
    assert cg.get_rng_state() == before


def test_theory_does_not_import_torch():
    code = "import sys, convgrad.theory, convgrad.theory.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ 1. equivariance
def test_equivariance_shows_where_it_breaks(results):
    m = results["equivariance"].measurements
    assert m["1d_full_s1_input_t3"] <= 1e-12
    assert m["2d_full_s1_kernel_t2x1"] <= 1e-12
    for border in ("1d_valid_s1_input_t2", "1d_same_s1_input_t2", "2d_valid_s1_input_t1x2",
                   "2d_same_s1_input_t2x1"):
        assert m[border] > 1e-3  # the border violation is measured and reported ...
        assert m[border + "_interior"] <= 1e-12  # ... while the interior is exact
    assert m["1d_full_s2_input_t1"] > 1e-3  # stride 2, shift 1: not equivariant
    assert m["1d_full_s2_input_t4"] <= 1e-12  # stride 2, shift 4: output shifts by 2
    assert "borders" in results["equivariance"].details


@pytest.mark.parametrize("wrong", [
    ShiftCase(1, "full", 2, (1,), "input", True),  # stride 2 claimed equivariant to shift 1
    ShiftCase(2, "full", 2, (1, 0), "input", True),
    ShiftCase(1, "valid", 1, (2,), "input", True),  # valid claimed equivariant at the borders
    ShiftCase(2, "same", 1, (2, 1), "input", True),
    ShiftCase(1, "full", 1, (3,), "input", False),  # full convolution claimed to break
    ShiftCase(2, "full", 1, (2, 1), "kernel", False),
], ids=str)
def test_equivariance_fails_on_a_wrong_claim(wrong):
    cases = [*DEFAULT_SHIFT_CASES, wrong]
    assert not CHECKS["equivariance"].run(cases=cases).passed


# ------------------------------------------------------------------------------ 2. output size
@pytest.mark.parametrize("formula", [
    lambda w, k, s, p, d: (w + 2 * p - (k - 1) - 1) // s + 1,  # dilation forgotten
    lambda w, k, s, p, d: (w + p - d * (k - 1) - 1) // s + 1,  # padding on one side only
    lambda w, k, s, p, d: -(-(w + 2 * p - d * (k - 1) - 1) // s) + 1,  # ceil instead of floor
    lambda w, k, s, p, d: (w + 2 * p - d * (k - 1)) // s,  # "+1" moved inside
], ids=["no dilation", "one-sided padding", "ceil", "plus one inside"])
def test_output_size_fails_on_a_wrong_formula(formula):
    result = CHECKS["output_size"].run(formula=formula)
    assert not result.passed and result.error > 0


def test_output_size_fails_on_a_wrong_valid_length():
    result = CHECKS["output_size"].run(valid=lambda n, k: n - k)
    assert not result.passed
    assert "1 at K=N" in result.details or "not 1" in result.details


# ------------------------------------------------------------------------------ 3. filter Jacobian
@pytest.mark.parametrize("patches", [
    lambda x, k: np.stack([x[i:i + k] for i in range(len(x) - k + 1)]).T,  # transposed
    lambda x, k: np.stack([x[i:i + k][::-1] for i in range(len(x) - k + 1)]),  # flipped patches
    lambda x, k: np.stack([x[i + 1:i + k + 1] for i in range(len(x) - k)]),  # off by one
], ids=["transposed", "flipped", "off by one"])
def test_filter_jacobian_fails_on_a_wrong_matrix(patches):
    result = CHECKS["filter_jacobian"].run(patches=patches)
    assert not result.passed and result.error > 1e-3


def test_a_square_patch_matrix_is_its_own_transpose():
    # N - K + 1 == K: the patch matrix is a symmetric Hankel matrix, so "transposed" is not a
    # wrong claim there; the default N = 7, K = 3 catches a transposed J by its shape
    x = np.arange(1.0, 6.0)
    np.testing.assert_array_equal(theory.convolution.patch_matrix(x, 3),
                                  theory.convolution.patch_matrix(x, 3).T)
    result = CHECKS["filter_jacobian"].run(
        patches=lambda x, k: theory.convolution.patch_matrix(x, k).T, n=5, k=3)
    assert result.passed


# ------------------------------------------------------------------------------ 4. input gradient
def test_input_gradient_prints_the_worked_example(results):
    details = results["input_gradient"].details
    assert "dC/dx_11 = k1 * dC/dy_11 = 2" in details
    assert "dC/dx_21 = k2 * dC/dy_11 + k1 * dC/dy_21 = 5" in details
    assert "dC/dx_33 = k2 * dC/dy_23 = 2" in details
    assert "dC/dk1 = x_11 * dC/dy_11 + x_12 * dC/dy_12" in details
    assert "dC/dk2 = x_21 * dC/dy_11" in details


def _not_flipped(dout, w, input_shape, stride, pads, dilation):
    spread = np.zeros(tuple((n - 1) * s + 1 for n, s in zip(dout.shape, stride, strict=True)))
    spread[tuple(slice(None, None, s) for s in stride)] = dout
    grad = full_cross_correlation(spread, w)  # the kernel NOT flipped
    padded = np.zeros(tuple(n + p + q for n, (p, q) in zip(input_shape, pads, strict=True)))
    padded[tuple(slice(0, n) for n in grad.shape)] = grad
    return padded[tuple(slice(p, p + n) for n, (p, _) in zip(input_shape, pads, strict=True))]


def _stride_ignored(dout, w, input_shape, stride, pads, dilation):
    return theory.convolution.full_convolution_flipped(
        dout, w, input_shape, (1,) * len(stride), pads, dilation)


@pytest.mark.parametrize("claim", [_not_flipped, _stride_ignored], ids=["not flipped",
                                                                        "stride ignored"])
def test_input_gradient_fails_on_a_wrong_formula(claim):
    result = CHECKS["input_gradient"].run(input_gradient=claim)
    assert not result.passed and result.error > 1e-3


def test_the_unflipped_kernel_already_fails_on_the_worked_example():
    error, _ = theory.convolution._worked_example(_not_flipped)
    assert error > 1.0


# ------------------------------------------------------------------------------ 5. dead ReLU
def test_dead_relu_reports_zero_gradient_and_no_drift(results):
    m = results["dead_relu"].measurements
    assert m["max_preactivation"] < 0
    assert m["max_grad"] == 0.0 and m["drift"] == 0.0
    assert m["live_grad"] > 1e-3  # the same pipeline does produce gradients when alive


def test_dead_relu_fails_for_a_leaky_unit():
    def leaky(z):
        return cg.nn.functional.relu(z) - 0.01 * cg.nn.functional.relu(-z)

    result = CHECKS["dead_relu"].run(activation=leaky)
    assert not result.passed and result.measurements["max_grad"] > 0
    assert result.measurements["drift"] > 0


def test_dead_relu_fails_when_some_example_is_alive():
    result = CHECKS["dead_relu"].run(margin=-0.3)
    assert not result.passed
    assert result.measurements["max_preactivation"] > 0 and result.error > 0


# ------------------------------------------------------------------------------ 6. counts
def test_param_counts_come_from_summary(results):
    m = results["param_counts"].measurements
    assert m == {key: float(value) for key, value in EXPECTED_COUNTS.items()}
    assert (m["deep_mnist_conv1"] + m["deep_mnist_conv2"] + m["deep_mnist_fc1"]
            + m["deep_mnist_fc2"]) == m["deep_mnist_total"] == 3_274_634


@pytest.mark.parametrize("key, wrong", [
    ("rgb_conv_96x5x5", 7_297),
    ("rgb_conv_96x5x5", 96 * 25 + 96),  # forgot the 3 input channels
    ("fc_4x4x256_to_4x4x256", 4096 * 4096),  # forgot the bias
    ("constraints_10000x1000", 10_000 + 1_000),
])
def test_param_counts_fail_on_a_wrong_count(key, wrong):
    result = CHECKS["param_counts"].run(expected={**EXPECTED_COUNTS, key: wrong})
    assert not result.passed and result.error == abs(wrong - EXPECTED_COUNTS[key])


def test_param_counts_fail_on_a_missing_or_unknown_count():
    missing = {k: v for k, v in EXPECTED_COUNTS.items() if k != "deep_mnist_fc1"}
    assert not CHECKS["param_counts"].run(expected=missing).passed
    assert not CHECKS["param_counts"].run(expected={**EXPECTED_COUNTS, "extra": 1}).passed


# ------------------------------------------------------------------------------ 7. calculus
@pytest.mark.parametrize("claim", [
    {"quadratic_form": lambda a, w: 2 * a @ w},  # true only for symmetric A
    {"quadratic_form": lambda a, w: (a + a.T) @ w.T},  # wrong shape
    {"sigmoid_layer": lambda dy, y, x: dy @ x.T},  # sigmoid gradient without y(1-y)
    {"sigmoid_layer": lambda dy, y, x: (dy * y * (1 - y)) @ x},  # x not transposed
    {"sum_of_paths": lambda g, f: g},  # one path forgotten
    {"sum_of_paths": lambda g, f: g * f},
], ids=["2AW", "shape", "no y(1-y)", "x not transposed", "one path", "product"])
def test_matrix_calculus_fails_on_a_wrong_rule(claim):
    result = CHECKS["matrix_calculus"].run(**claim)
    assert not result.passed and result.error > 1e-3


# ------------------------------------------------------------------------------ 8. linear net
def test_linear_network_is_affine_to_float64_rounding(results):
    m = results["linear_network"].measurements
    assert m["max_abs_diff"] < 1e-12
    assert "affine" in results["linear_network"].details


def test_the_relu_network_is_reported_not_affine():
    result = CHECKS["linear_network"].run(relu=True)
    assert not result.passed
    assert "not affine" in result.details
    assert result.measurements["relative"] > 1e-3


# ------------------------------------------------------------------------------ conv_jacobian
def test_weight_jacobian_is_the_patch_matrix():
    x, w = np.arange(1.0, 7.0), np.array([0.5, -1.0, 2.0])
    expected = np.array([[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]], dtype=float)
    np.testing.assert_array_equal(conv_jacobian(x, w, wrt="weight"), expected)


def test_input_jacobian_is_banded_toeplitz():
    x, w = np.arange(1.0, 7.0), np.array([1.0, 2.0, 3.0])
    expected = np.array([[1, 2, 3, 0, 0, 0], [0, 1, 2, 3, 0, 0], [0, 0, 1, 2, 3, 0],
                         [0, 0, 0, 1, 2, 3]], dtype=float)
    np.testing.assert_array_equal(conv_jacobian(x, w, wrt="input"), expected)


_GEOMETRIES = [
    # (x shape, w shape, stride, padding, dilation)
    ((9,), (3,), 1, 0, 1),
    ((10,), (4,), 2, 1, 1),
    ((11,), (3,), 3, 2, 2),
    ((8,), (4,), 1, "same", 1),
    ((7,), (7,), 1, 0, 1),
    ((6, 7), (3, 2), 1, 0, 1),
    ((8, 7), (3, 3), (2, 1), (1, 2), (1, 2)),
    ((7, 7), (2, 3), 2, 1, (2, 1)),
    ((5, 6), (2, 2), 1, "same", 1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("shape, kshape, stride, padding, dilation", _GEOMETRIES, ids=str)
def test_conv_jacobian_matches_torch_autograd(shape, kshape, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=shape), rng.normal(size=kshape)
    conv = torch.nn.functional.conv1d if len(shape) == 1 else torch.nn.functional.conv2d
    xt = torch.tensor(x[None, None], requires_grad=True)
    wt = torch.tensor(w[None, None], requires_grad=True)
    z = conv(xt, wt, stride=stride, padding=padding, dilation=dilation)
    dout = rng.normal(size=z.shape[2:])
    z.backward(torch.tensor(dout[None, None]))
    j_w = conv_jacobian(x, w, "weight", stride, padding, dilation)
    j_x = conv_jacobian(x, w, "input", stride, padding, dilation)
    np.testing.assert_allclose(j_w @ w.ravel(), z.detach().numpy().ravel(), atol=1e-12)
    np.testing.assert_allclose(j_x @ x.ravel(), z.detach().numpy().ravel(), atol=1e-12)
    np.testing.assert_allclose(dout.ravel() @ j_w, wt.grad.numpy().ravel(), atol=1e-12)
    np.testing.assert_allclose(dout.ravel() @ j_x, xt.grad.numpy().ravel(), atol=1e-12)
    np.testing.assert_allclose(conv_definition(x, w, stride, padding, dilation).ravel(),
                               z.detach().numpy().ravel(), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 9), kernel=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_conv_jacobian_agrees_with_the_engine(size, kernel, stride, padding, dilation, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=size), rng.normal(size=kernel)
    if dilation * (kernel - 1) + 1 > size + 2 * padding:
        with pytest.raises(ArgumentError, match="larger than the padded input"):
            conv_jacobian(x, w, "weight", stride, padding, dilation)
        return
    z = engine_conv(x, w, stride, padding, dilation)
    j_w = conv_jacobian(x, w, "weight", stride, padding, dilation)
    j_x = conv_jacobian(x, w, "input", stride, padding, dilation)
    assert j_w.shape == (z.size, kernel) and j_x.shape == (z.size, size)
    np.testing.assert_allclose(j_w @ w, z, atol=1e-12)
    np.testing.assert_allclose(j_x @ x, z, atol=1e-12)


def test_conv_jacobian_refuses_bad_arguments():
    with pytest.raises(ArgumentError, match="wrt must be 'weight' or 'input', received 'bias'"):
        conv_jacobian(np.ones(5), np.ones(2), wrt="bias")
    with pytest.raises(ShapeError, match=r"received x \(5,\) and w \(2, 2\)"):
        conv_jacobian(np.ones(5), np.ones((2, 2)))
    with pytest.raises(ArgumentError, match="larger than the padded input size 3"):
        conv_jacobian(np.ones(3), np.ones(4))
    with pytest.raises(ArgumentError, match="strictly positive"):
        conv_jacobian(np.ones(5), np.ones(2), stride=0)
    with pytest.raises(ArgumentError, match="padding must be"):
        conv_jacobian(np.ones(5), np.ones(2), padding="full")


def test_plot_jacobian_writes_a_png(tmp_path):
    path = plot_jacobian(conv_jacobian(np.arange(1.0, 7.0), np.ones(3), "input"),
                         tmp_path / "sub" / "j.png", title="J")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ CLI
@pytest.fixture
def main(monkeypatch):
    """convgrad.cli.main with only the theory subcommands, so these tests do not depend on the
    other subsystems' command modules."""
    monkeypatch.setattr(convgrad.cli, "_SUBCOMMAND_MODULES", ("convgrad.theory.cli",))
    return convgrad.cli.main


def test_verify_all_passes_and_prints_the_table(main, capsys, monkeypatch, all_results):
    # the checks themselves ran in the all_results fixture; here only the command around them
    monkeypatch.setattr(theory, "run_checks", lambda names=None: all_results)
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    for name in CLAIM_ORDER:
        assert name in out
    assert out.count("PASS") == 8 and "FAIL" not in out
    assert "8/8 checks passed" in out
    assert "statement" in out.splitlines()[0] and "error" in out.splitlines()[0]


def test_verify_selected_names_with_details(main, capsys):
    assert main(["verify", "--details", "output_size", "dead_relu"]) == 0
    out = capsys.readouterr().out
    assert "2/2 checks passed" in out
    assert "== 5. dead_relu" in out and "Formula:" in out and "SGD steps" in out


def test_verify_json(main, capsys):
    assert main(["verify", "--json", "filter_jacobian"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["name"] == "filter_jacobian" and entry["passed"] is True
    assert entry["error"] <= entry["tolerance"]
    assert set(entry) >= {"statement", "formula", "details", "measurements", "number"}


def test_verify_unknown_name_exits_2_listing_the_valid_names(main, capsys):
    assert main(["verify", "output_size", "equivariant"]) == 2
    err = capsys.readouterr().err
    assert "unknown check 'equivariant'" in err
    assert "valid names: equivariance, output_size" in err


def test_verify_exits_1_when_a_check_fails(main, capsys, monkeypatch):
    wrong = dataclasses.replace(
        CHECKS["param_counts"],
        compute=lambda: CHECKS["param_counts"].compute(
            expected={**EXPECTED_COUNTS, "rgb_conv_96x5x5": 7_297}),
    )
    monkeypatch.setitem(CHECKS, "param_counts", wrong)
    assert main(["verify", "param_counts", "output_size"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1/2 checks passed" in out


def test_verify_list(main, capsys):
    assert main(["verify", "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("equivariance")


def test_jacobian_command_prints_the_patch_matrix_and_plots(main, capsys, tmp_path):
    png = tmp_path / "out.png"
    assert main(["jacobian", "--n", "6", "--k", "3", "--stride", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].split() == ["w1", "w2", "w3"]
    assert [line.split() for line in lines[3:7]] == [
        ["z1", "1", "2", "3"], ["z2", "2", "3", "4"], ["z3", "3", "4", "5"], ["z4", "4", "5", "6"]]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_jacobian_command_input_2d_same(main, capsys):
    assert main(["jacobian", "--n", "3", "--k", "2", "--2d", "--wrt", "input",
                 "--padding", "same"]) == 0
    out = capsys.readouterr().out
    assert "J has shape (9, 9)" in out
    assert out.splitlines()[3].split() == ["z1", "1", "2", ".", "3", "4", ".", ".", ".", "."]


def test_jacobian_command_strided_dilated(main, capsys):
    assert main(["jacobian", "--n", "7", "--k", "2", "--stride", "2", "--dilation", "2",
                 "--padding", "1"]) == 0
    out = capsys.readouterr().out
    # x_pad = [0, 1..7, 0], windows at 0, 2, 4, 6 read (x_pad[o*2], x_pad[o*2 + 2])
    rows = [line.split() for line in out.splitlines()[3:7]]
    assert rows == [["z1", ".", "2"], ["z2", "2", "4"], ["z3", "4", "6"], ["z4", "6", "."]]


@pytest.mark.parametrize("argv, message", [
    (["--n", "2", "--k", "5"], "larger than the padded input"),
    (["--padding", "full"], "--padding must be an int, 'valid' or 'same'"),
    (["--n", "0"], "strictly positive --n and --k"),
    (["--stride", "0"], "strictly positive"),
])
def test_jacobian_command_errors_exit_2(main, capsys, argv, message):
    assert main(["jacobian", *argv]) == 2
    assert message in capsys.readouterr().err
