"""Claims 1-4: convolution's equivariance, output size, filter Jacobian and input gradient.

Every claim is computed with the engine (``convgrad.nn.functional.conv1d``/``conv2d`` and
autograd, float64) and compared with a computation from the definition: explicit Jacobians from
:mod:`convgrad.theory.jacobian`, central differences, or the course's formula written in NumPy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from convgrad.errors import ArgumentError, ConvgradError
from convgrad.theory.base import (
    Check,
    Result,
    array_text,
    central_difference,
    engine_conv,
    engine_conv_grads,
    max_abs_diff,
    verdict,
)
from convgrad.theory.jacobian import conv_jacobian, format_matrix, same_padding

__all__ = [
    "EQUIVARIANCE", "FILTER_JACOBIAN", "INPUT_GRADIENT", "OUTPUT_SIZE", "ShiftCase",
    "DEFAULT_SHIFT_CASES", "full_convolution_flipped", "full_cross_correlation",
    "output_size_formula", "patch_matrix", "valid_length",
]

Pads = tuple[tuple[int, int], ...]


# ----------------------------------------------------------------------- 1. equivariance
class ShiftCase(NamedTuple):
    """One shift experiment of claim 1.

    Attributes:
        dim: 1 or 2.
        mode: "full" (signals on Z, zero-extended; padding K-1), "valid" or "same" (a fixed
            window: shifted-in values are zeros and values shifted past the end are lost).
        stride: s (only "full" supports s > 1 here).
        shift: t, one int per axis.
        argument: "input" shifts f, "kernel" shifts g ("full" only).
        equivariant: the claim: conv(S_t f, g) = S_{t/s} conv(f, g) at every output position.
            False claims that it breaks: at the borders only (valid/same, the interior still
            agrees), or everywhere (stride s not dividing t).
    """

    dim: int
    mode: str
    stride: int
    shift: tuple[int, ...]
    argument: str = "input"
    equivariant: bool = True


DEFAULT_SHIFT_CASES: tuple[ShiftCase, ...] = (
    ShiftCase(1, "full", 1, (3,), "input", True),
    ShiftCase(1, "full", 1, (2,), "kernel", True),
    ShiftCase(2, "full", 1, (1, 2), "input", True),
    ShiftCase(2, "full", 1, (2, 1), "kernel", True),
    ShiftCase(1, "full", 2, (4,), "input", True),
    ShiftCase(2, "full", 2, (2, 4), "input", True),
    ShiftCase(1, "valid", 1, (2,), "input", False),
    ShiftCase(1, "same", 1, (2,), "input", False),
    ShiftCase(2, "valid", 1, (1, 2), "input", False),
    ShiftCase(2, "same", 1, (2, 1), "input", False),
    ShiftCase(1, "full", 2, (1,), "input", False),
    ShiftCase(2, "full", 2, (1, 0), "input", False),
)


def _convolve(f: np.ndarray, g: np.ndarray, mode: str, stride: int) -> np.ndarray:
    """True convolution (f*g)[n] = sum_m g[m] f[n-m] on the engine: conv with the flipped g."""
    padding = tuple(k - 1 for k in g.shape) if mode == "full" else mode
    if f.ndim == 1 and mode == "full":
        padding = padding[0]
    return engine_conv(f, np.flip(g).copy(), stride=stride, padding=padding)


def _extend_shift(a: np.ndarray, t: Sequence[int]) -> np.ndarray:
    """S_t on finitely supported signals on Z: prepend t zeros along each axis."""
    return np.pad(a, [(ti, 0) for ti in t])


def _window_shift(a: np.ndarray, t: Sequence[int]) -> np.ndarray:
    """Shift by t inside a fixed window: zeros come in, values pushed past the end are lost."""
    out = np.zeros_like(a)
    target = tuple(slice(ti, None) for ti in t)
    source = tuple(slice(0, n - ti) for n, ti in zip(a.shape, t, strict=True))
    out[target] = a[source]
    return out


def _extended_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| after zero-extending both to a common shape (signals on Z)."""
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    a = np.pad(a, [(0, s - n) for s, n in zip(shape, a.shape, strict=True)])
    b = np.pad(b, [(0, s - n) for s, n in zip(shape, b.shape, strict=True)])
    return float(np.max(np.abs(a - b)))


def _shift_case(case: ShiftCase, f: np.ndarray, g: np.ndarray) -> dict[str, float | str]:
    """Measure one case: violation everywhere, and (valid/same) in the interior only."""
    t = case.shift
    if case.mode == "full":
        y = _convolve(f, g, "full", case.stride)
        if case.argument == "input":
            shifted = _convolve(_extend_shift(f, t), g, "full", case.stride)
        else:
            shifted = _convolve(f, _extend_shift(g, t), "full", case.stride)
        # the best output shift m, searched over 0..ceil(t/s)
        candidates = itertools.product(*[range(-(-ti // case.stride) + 1) for ti in t])
        best = min(
            ((_extended_diff(shifted, _extend_shift(y, m)), m) for m in candidates),
            key=lambda pair: pair[0],
        )
        return {"violation": best[0], "output_shift": str(best[1])}
    if case.stride != 1 or case.argument != "input":
        raise ArgumentError(f"claim 1: {case.mode!r} cases take stride 1 and shift the input")
    y = _convolve(f, g, case.mode, 1)
    shifted = _convolve(_window_shift(f, t), g, case.mode, 1)
    diff = np.abs(shifted - _window_shift(y, t))
    # interior: outputs whose receptive field lies in [t, N-1] of the shifted window on each axis
    masks = []
    for axis, size in enumerate(f.shape):
        k = g.shape[axis]
        before = same_padding(size, k, 1, 1)[0] if case.mode == "same" else 0
        o = np.arange(diff.shape[axis])
        masks.append((o - before >= t[axis]) & (o - before + k - 1 <= size - 1))
    interior = masks[0] if f.ndim == 1 else np.outer(masks[0], masks[1])
    border_positions = np.argwhere((diff > 1e-12) & ~interior)
    return {
        "violation": float(diff.max()),
        "interior": float(diff[interior].max()) if interior.any() else float("nan"),
        "interior_count": float(interior.sum()),
        "outputs": float(diff.size),
        "border_positions": str([tuple(int(v) for v in p) for p in border_positions[:6]]),
    }


def _equivariance(
    cases: Sequence[ShiftCase] = DEFAULT_SHIFT_CASES, tolerance: float = 1e-12,
    break_threshold: float = 1e-6,
) -> Result:
    """Claim 1. Args: cases, the shift experiments and what each claims (see ShiftCase);
    tolerance for "equivariant"; break_threshold, the smallest violation that counts as broken.
    """
    rng = np.random.default_rng(1)
    signals = {1: (rng.normal(size=9), rng.normal(size=3)),
               2: (rng.normal(size=(7, 8)), rng.normal(size=(3, 2)))}
    errors, breaks, lines, measurements, ok_all = [0.0], [], [], {}, True
    for case in cases:
        f, g = signals[case.dim]
        m = _shift_case(case, f, g)
        label = (f"{case.dim}D {case.mode:<5} s={case.stride} shift {case.argument:<6} by "
                 f"{case.shift}")
        key = (f"{case.dim}d_{case.mode}_s{case.stride}_{case.argument}_t"
               + "x".join(map(str, case.shift)))
        measurements[key] = m["violation"]
        claimed = "equivariant" if case.equivariant else "breaks"
        if case.equivariant:
            ok = m["violation"] <= tolerance
            errors.append(m["violation"])
            text = f"max |conv(S_t f, g) - S_t conv(f, g)| = {m['violation']:.1e}"
            if case.mode == "full":
                text += f" (output shift {m['output_shift']})"
        elif case.mode == "full":
            ok = m["violation"] > break_threshold
            breaks.append(m["violation"])
            text = (f"best output shift {m['output_shift']} still leaves {m['violation']:.2e}: "
                    f"not a shift of the output")
        else:
            interior_ok = m["interior_count"] > 0 and m["interior"] <= tolerance
            ok = interior_ok and m["violation"] > break_threshold
            errors.append(m["interior"] if m["interior_count"] > 0 else float("inf"))
            breaks.append(m["violation"])
            measurements[key + "_interior"] = m["interior"]
            text = (f"interior ({int(m['interior_count'])} of {int(m['outputs'])} outputs) "
                    f"{m['interior']:.1e}, borders {m['violation']:.2e} at outputs "
                    f"{m['border_positions']}")
        ok_all &= ok
        lines.append(f"{label}: {text}  [claimed {claimed}: {verdict(ok)}]")
    error = max(errors)
    measurements["min_break"] = min(breaks) if breaks else float("nan")
    details = "\n".join([
        "(f*g)[n] = sum_m f[m] g[n-m], computed as the engine's conv with the flipped g;",
        "S_t prepends t zeros (signals on Z); valid/same shift inside a fixed window.",
        *lines,
        f"largest violation where equivariance is claimed: {error:.1e}; smallest violation "
        f"where it is claimed to break: {measurements['min_break']:.2e}",
    ])
    return Result(ok_all and error <= tolerance, error, tolerance, details, measurements)


EQUIVARIANCE = Check(
    name="equivariance",
    number=1,
    statement="Shifting f or g by t shifts f*g by t (full conv); borders and strides break it",
    formula=(
        "(S_t f) * g = S_t (f * g) = f * (S_t g), (S_t f)[n] = f[n - t], in 1D and 2D.\n"
        "Stride s: conv_s(S_t f, g) = S_{t/s} conv_s(f, g) only when s divides t.\n"
        "'valid'/'same' in a fixed window: equal in the interior, not at the borders."
    ),
    compute=_equivariance,
)


# ----------------------------------------------------------------------- 2. output size
def output_size_formula(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The course's claim: W_out = floor((W + 2p - d(K-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def valid_length(n: int, k: int) -> int:
    """The course's claim for a valid convolution: N - K + 1."""
    return n - k + 1


def _engine_length(
    conv_input: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
    padding: tuple[int, ...], dilation: tuple[int, ...],
) -> tuple[int, ...] | None:
    """Spatial output shape of the engine's conv on ones, or None when the engine refuses."""
    try:
        out = engine_conv(np.ones(conv_input), np.ones(kernel),
                          stride=stride if len(stride) > 1 else stride[0],
                          padding=padding if len(padding) > 1 else padding[0],
                          dilation=dilation if len(dilation) > 1 else dilation[0])
    except ConvgradError:
        return None
    return out.shape


def _output_size(
    formula: Callable[[int, int, int, int, int], int] = output_size_formula,
    valid: Callable[[int, int], int] = valid_length,
) -> Result:
    """Claim 2. Args: formula(size, kernel, stride, padding, dilation) -> W_out and
    valid(n, k) -> length, the claimed size formulas. Error: the number of mismatches.
    """
    axis_grid = list(itertools.product((1, 2, 3, 5, 8, 11), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3),
                                       (1, 2)))
    named = [(28, 5, 2, 1, 1), (28, 5, 0, 1, 1), (32, 5, 2, 2, 1), (6, 6, 0, 1, 1),
             (10, 3, 0, 1, 2), (7, 3, 1, 2, 1)]
    mismatches: list[str] = []
    refusals = compared = 0

    def compare(shape_in: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...] | None:
        nonlocal refusals, compared
        actual = _engine_length(shape_in, kernel, stride, padding, dilation)
        predicted = tuple(formula(*args) for args in zip(shape_in, kernel, stride, padding,
                                                          dilation, strict=True))
        compared += 1
        if actual is None:
            refusals += 1
            # the engine refuses exactly the kernels that do not fit: formula <= 0 there
            if all(p > 0 for p in predicted):
                mismatches.append(f"engine refused {shape_in} K={kernel} p={padding} s={stride} "
                                  f"d={dilation}, formula says {predicted}")
        elif actual != predicted:
            mismatches.append(f"{shape_in} K={kernel} p={padding} s={stride} d={dilation}: "
                              f"engine {actual}, formula {predicted}")
        return actual

    examples = []
    for w, k, p, s, d in named:
        actual = compare((w,), (k,), (s,), (p,), (d,))
        examples.append(f"  conv1d W={w:>2} K={k} p={p} s={s} d={d}: formula "
                        f"{formula(w, k, s, p, d)}, engine {actual[0] if actual else None}")
    for w, k, p, s, d in axis_grid:
        compare((w,), (k,), (s,), (p,), (d,))
    rng = np.random.default_rng(2)
    for index in rng.choice(len(axis_grid), size=(80, 2)):
        (h, kh, ph, sh, dh), (w, kw, pw, sw, dw) = axis_grid[index[0]], axis_grid[index[1]]
        compare((h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    valid_checked = 0
    for n in range(1, 13):
        for k in range(1, n + 1):
            for shape_in, kernel in (((n,), (k,)), ((n, n), (k, k))):
                actual = _engine_length(shape_in, kernel, (1,) * len(kernel), (0,) * len(kernel),
                                        (1,) * len(kernel))
                claim = (valid(n, k),) * len(kernel)
                valid_checked += 1
                if actual != claim:
                    mismatches.append(f"valid N={n} K={k} ({len(kernel)}D): engine {actual}, "
                                      f"N-K+1 claim {claim}")
            if k == n and valid(n, k) != 1:
                mismatches.append(f"K = N = {n}: claim gives {valid(n, k)}, not 1")
    error = float(len(mismatches))
    details = "\n".join([
        "W_out = floor((W + 2p - d(K-1) - 1)/s) + 1 against the shapes conv1d/conv2d return:",
        *examples,
        f"{compared} conv1d/conv2d geometries (sizes 1-32, K 1-6, p 0-2, s 1-3, d 1-2; "
        f"{refusals} refused by the engine where the formula gives <= 0),",
        f"{valid_checked} valid convolutions N = 1..12, K = 1..N in 1D and 2D (N-K+1; 1 at K=N).",
        f"mismatches: {len(mismatches)}",
        *[f"  {m}" for m in mismatches[:8]],
    ])
    return Result(not mismatches, error, 0.0, details,
                  {"compared": float(compared + valid_checked), "mismatches": error})


OUTPUT_SIZE = Check(
    name="output_size",
    number=2,
    statement="Output size = floor((W + 2p - d(K-1) - 1)/s) + 1; valid: N-K+1, and 1 when K=N",
    formula=(
        "W_out = floor((W + 2p - d(K-1) - 1) / s) + 1 per spatial axis;\n"
        "p = 0, s = d = 1: N - K + 1, which is 1 for K = N."
    ),
    compute=_output_size,
)


# ----------------------------------------------------------------------- 3. filter Jacobian
def patch_matrix(x: np.ndarray, k: int) -> np.ndarray:
    """The course's claim: dz/df = [[x1..xK], [x2..xK+1], ..., [x(N-K+1)..xN]], (N-K+1, K)."""
    return np.stack([x[i:i + k] for i in range(len(x) - k + 1)])


def _filter_jacobian(
    patches: Callable[[np.ndarray, int], np.ndarray] = patch_matrix, n: int = 7, k: int = 3,
    tolerance: float = 1e-8,
) -> Result:
    """Claim 3. Args: patches(x, k) -> the claimed (N-K+1, K) Jacobian; n, k the sizes.
    """
    rng = np.random.default_rng(3)
    x, f, dout = rng.normal(size=n), rng.normal(size=k), rng.normal(size=n - k + 1)
    claim = np.asarray(patches(x, k), dtype=np.float64)
    definition = conv_jacobian(x, f, wrt="weight")
    differences = central_difference(lambda weight: engine_conv(x, weight), f, step=1e-4)
    _, dw = engine_conv_grads(x, f, dout)
    shape_ok = claim.shape == (n - k + 1, k)
    grad_claim = dout @ claim if shape_ok else np.full(k, np.inf)
    e_def = max_abs_diff(claim, definition)
    e_fd = max_abs_diff(claim, differences)
    e_grad = max_abs_diff(grad_claim, dw)
    error = max(e_def, e_fd, e_grad)
    names = [f"f{j + 1}" for j in range(k)]
    rows = [f"z{o + 1}" for o in range(claim.shape[0])] if claim.ndim == 2 else None
    details = "\n".join([
        f"x = {array_text(x, 3)}, N = {n}, K = {k}",
        f"claimed J = dz/df, shape {claim.shape} (expected ({n - k + 1}, {k})):",
        format_matrix(claim, rows, names) if claim.ndim == 2 else array_text(claim),
        f"max |J - explicit Jacobian from the definition|      = {e_def:.1e}",
        f"max |J - central differences of the engine's conv1d| = {e_fd:.1e}",
        f"dL/df by autograd   = {array_text(dw)}",
        f"(dL/dz)^T J         = {array_text(grad_claim)}",
        f"max |difference|    = {e_grad:.1e}",
    ])
    return Result(shape_ok and error <= tolerance, error, tolerance, details,
                  {"vs_definition": e_def, "vs_central_differences": e_fd, "vs_autograd": e_grad})


FILTER_JACOBIAN = Check(
    name="filter_jacobian",
    number=3,
    statement="dz/df of a valid 1D conv is the (N-K+1)xK patch matrix; dL/df = (dL/dz)^T J",
    formula=(
        "z_i = sum_j f_j I_(i+j-1)  =>  dz_i/df_j = I_(i+j-1):\n"
        "J = [[I1 .. IK], [I2 .. I(K+1)], ..., [I(N-K+1) .. IN]];  dL/df = (dL/dz)^T J."
    ),
    compute=_filter_jacobian,
)


# ----------------------------------------------------------------------- 4. input gradient
def full_cross_correlation(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'Full' cross-correlation: out[n] = sum_m k[m] a_pad[n + m], a zero-padded by K-1 per side.

    Args:
        a: (A,) or (A1, A2). k: (K,) or (K1, K2).

    Returns:
        (A + K - 1,) or (A1 + K1 - 1, A2 + K2 - 1).
    """
    padded = np.pad(a, [(n - 1, n - 1) for n in k.shape])
    out_shape = tuple(p + q - 1 for p, q in zip(a.shape, k.shape, strict=True))
    out = np.zeros(out_shape)
    for m in np.ndindex(*k.shape):
        out += k[m] * padded[tuple(slice(mi, mi + n) for mi, n in zip(m, out_shape, strict=True))]
    return out


def full_convolution_flipped(
    dout: np.ndarray, w: np.ndarray, input_shape: tuple[int, ...], stride: tuple[int, ...],
    pads: Pads, dilation: tuple[int, ...],
) -> np.ndarray:
    """The course's claim: dL/dx = full convolution of dL/dz with the flipped kernel.

    Stride s spreads dL/dz apart (s - 1 zeros between entries), dilation d spreads the kernel;
    the full correlation with the flipped kernel gives dL/dx_pad, cropped by the padding (inputs
    past the last window get zero).

    Args:
        dout: dL/dz, (L_out,) or (H_out, W_out). w: (K,) or (kH, kW).
        input_shape: (L,) or (H, W). stride, dilation: per axis. pads: ((p_l, p_r), ...).

    Returns:
        dL/dx, input_shape.
    """
    spread = np.zeros(tuple((n - 1) * s + 1 for n, s in zip(dout.shape, stride, strict=True)))
    spread[tuple(slice(None, None, s) for s in stride)] = dout
    dilated = np.zeros(tuple(d * (k - 1) + 1 for k, d in zip(w.shape, dilation, strict=True)))
    dilated[tuple(slice(None, None, d) for d in dilation)] = w
    grad = full_cross_correlation(spread, np.flip(dilated))
    padded = np.zeros(tuple(n + p + q for n, (p, q) in zip(input_shape, pads, strict=True)))
    padded[tuple(slice(0, n) for n in grad.shape)] = grad
    return padded[tuple(slice(p, p + n) for n, (p, _) in zip(input_shape, pads, strict=True))]


_GRADIENT_CASES = (
    # (input shape, kernel shape, stride, padding, dilation)
    ((9,), (3,), 1, 0, 1),
    ((10,), (4,), 2, 1, 1),
    ((11,), (3,), 3, 2, 2),
    ((8,), (4,), 1, "same", 1),
    ((7, 8), (3, 2), 1, 0, 1),
    ((9, 7), (3, 3), (2, 1), (1, 2), (1, 2)),
    ((8, 8), (2, 3), 2, 1, (2, 1)),
    ((6, 7), (2, 2), 1, "same", 1),
)


def _per_axis(value: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    """An int or a per-axis tuple as a per-axis tuple."""
    return (value,) * nd if isinstance(value, int) else tuple(value)


def _side_by_side(matrices: dict[str, np.ndarray]) -> list[str]:
    """Small matrices printed next to each other under their titles, indented by two spaces."""
    blocks = [[title, *format_matrix(m, zero="0").splitlines()] for title, m in matrices.items()]
    widths = [max(map(len, block)) for block in blocks]
    height = max(map(len, blocks))
    return ["  " + "    ".join((block[r] if r < len(block) else "").ljust(width)
                               for block, width in zip(blocks, widths, strict=True)).rstrip()
            for r in range(height)]


def _worked_example(input_gradient: Callable[..., np.ndarray]) -> tuple[float, list[str]]:
    """The 3x3 image with the 2x1 kernel: y_ij = x_ij k1 + x_(i+1)j k2, C = sum(G * Y)."""
    x = np.arange(1.0, 10.0).reshape(3, 3)
    kernel = np.array([[2.0], [-1.0]])  # (kH, kW) = (2, 1): k1 = 2, k2 = -1
    g = np.array([[1.0, -1.0, 2.0], [3.0, 0.5, -2.0]])  # dC/dY
    x_terms: dict[tuple[int, int], list[tuple[int, tuple[int, int]]]] = {}
    k_terms: dict[int, list[tuple[tuple[int, int], tuple[int, int]]]] = {1: [], 2: []}
    for i in range(2):
        for j in range(3):
            for a in range(2):  # y_ij gets k_(a+1) * x_(i+a)j
                x_terms.setdefault((i + a, j), []).append((a + 1, (i, j)))
                k_terms[a + 1].append(((i + a, j), (i, j)))

    def name(prefix: str, ij: tuple[int, int]) -> str:
        return f"{prefix}_{ij[0] + 1}{ij[1] + 1}"

    lines = ["Worked example: X 3x3, K = [k1; k2] 2x1, y_ij = x_ij k1 + x_(i+1)j k2 (Y 2x3),",
             f"k1 = {kernel[0, 0]:g}, k2 = {kernel[1, 0]:g}, C = sum(G * Y) so dC/dY = G:",
             *_side_by_side({"X": x, "G = dC/dY": g})]
    dx_formula = np.zeros((3, 3))
    for i, j in sorted(x_terms):
        terms = x_terms[(i, j)]
        dx_formula[i, j] = sum(kernel[a - 1, 0] * g[o] for a, o in terms)
        text = " + ".join(f"k{a} * dC/d{name('y', o)}" for a, o in terms)
        lines.append(f"  dC/d{name('x', (i, j))} = {text} = {dx_formula[i, j]:g}")
    dk_formula = np.zeros((2, 1))
    for a, terms in k_terms.items():
        dk_formula[a - 1, 0] = sum(x[p] * g[o] for p, o in terms)
        text = " + ".join(f"{name('x', p)} * dC/d{name('y', o)}" for p, o in terms)
        lines.append(f"  dC/dk{a} = {text} = {dk_formula[a - 1, 0]:g}")
    dx_auto, dk_auto = engine_conv_grads(x, kernel, g)
    dx_claim = np.asarray(input_gradient(g, kernel, (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)))
    errors = [max_abs_diff(dx_formula, dx_auto), max_abs_diff(dk_formula, dk_auto),
              max_abs_diff(dx_claim, dx_auto)]
    lines += [
        *_side_by_side({"dC/dX (formulas)": dx_formula, "dC/dX (autograd)": dx_auto,
                        "full_conv(G, flip(K))": np.atleast_2d(dx_claim)}),
        f"  dC/dK by autograd = {array_text(dk_auto.ravel(), 4)}",
        f"  max |formulas - autograd| = {max(errors[:2]):.1e}, "
        f"max |full conv claim - autograd| = {errors[2]:.1e}",
    ]
    return max(errors), lines


def _input_gradient(
    input_gradient: Callable[..., np.ndarray] = full_convolution_flipped,
    tolerance: float = 1e-10,
) -> Result:
    """Claim 4. Args: input_gradient(dout, w, input_shape, stride, pads, dilation) -> dL/dx,
    the claimed formula (see full_convolution_flipped), on the worked example and random cases.
    """
    error, lines = _worked_example(input_gradient)
    measurements = {"worked_example": error}
    rng = np.random.default_rng(4)
    lines.append("Random cases, dL/dx by autograd vs the claim and vs (dL/dz)^T J_x (definition):")
    for shape, kshape, stride, padding, dilation in _GRADIENT_CASES:
        nd = len(shape)
        x, w = rng.normal(size=shape), rng.normal(size=kshape)
        s, d = _per_axis(stride, nd), _per_axis(dilation, nd)
        if padding == "same":
            pads = tuple(same_padding(n, k, si, di)
                         for n, k, si, di in zip(shape, kshape, s, d, strict=True))
        else:
            pads = tuple((p, p) for p in _per_axis(padding, nd))
        z = engine_conv(x, w, stride, padding, dilation)
        dout = rng.normal(size=z.shape)
        dx_auto, _ = engine_conv_grads(x, w, dout, stride, padding, dilation)
        dx_claim = np.asarray(input_gradient(dout, w, shape, s, pads, d))
        jacobian = conv_jacobian(x, w, "input", stride, padding, dilation)
        dx_definition = (dout.reshape(-1) @ jacobian).reshape(shape)
        e_claim = max_abs_diff(dx_claim, dx_auto)
        e_definition = max_abs_diff(dx_definition, dx_auto)
        measurements[f"{nd}d_{'x'.join(map(str, shape))}_s{stride}_p{padding}_d{dilation}"] = (
            max(e_claim, e_definition))
        error = max(error, e_claim, e_definition)
        lines.append(f"  {nd}D x {shape} K {kshape} s={stride} p={padding!r} d={dilation}: "
                     f"claim {e_claim:.1e}, definition {e_definition:.1e}")
    return Result(error <= tolerance, error, tolerance, "\n".join(lines), measurements)


INPUT_GRADIENT = Check(
    name="input_gradient",
    number=4,
    statement="dL/dx = full convolution of dL/dz with the flipped kernel",
    formula=(
        "z = x (*) k (cross-correlation)  =>  dL/dx = full_conv(dL/dz, flip(k)),\n"
        "dL/dx_i = sum_j k_j dL/dz_(i-j); stride: zeros between dL/dz entries; padding: crop."
    ),
    compute=_input_gradient,
)
