"""Data augmentation on whole batches: (N, C, H, W) arrays, one NumPy gather per batch.

torchvision's transforms, with its names, argument order, defaults and parameter semantics, but
applied to a whole mini-batch at once: every image of the batch gets its own random parameters
(drawn as one vector per parameter), and the pixels of all images move in one vectorised gather.
Randomness comes only from the ``numpy.random.Generator`` passed in::

    augment = Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)), RandomErasing()])
    out = augment(batch, rng)          # batch (N, C, H, W) float, rng np.random.Generator

so the same generator state gives the same batch, bit for bit. :class:`convgrad.data.DataLoader`
owns such a generator per batch (``DataLoader(..., transform=augment)``) and replays it exactly
after a resume.

The protocol is ``transform(batch, rng) -> batch``; any callable with that signature composes.

Differences from torchvision, all deliberate:

- input is always a batch (N, C, H, W) (floating point for ``Normalize`` and ``RandomAffine``);
  the output has the input's dtype;
- the draws come from NumPy, one vector per parameter, so a seed does not reproduce
  torchvision's parameters (the distributions are torchvision's);
- :class:`RandomAffine` interpolates bilinearly (torchvision's default is nearest), and fills
  outside the image as if the image were surrounded by ``fill``: ``fill + grid_sample(x - fill)``,
  which for ``fill=0`` is ``grid_sample(x, padding_mode='zeros')``. torchvision's tensor path
  computes ``grid_sample(x) * mask + (1 - mask) * fill`` with ``mask`` the sampled ones, which
  dims the interpolated one-pixel band along the image edge a second time.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from convgrad.errors import ArgumentError, DtypeError, ShapeError

__all__ = [
    "Compose",
    "Normalize",
    "RandomAffine",
    "RandomCrop",
    "RandomErasing",
    "Transform",
    "affine",
    "from_config",
    "inverse_affine_matrix",
]


class Transform(Protocol):
    """What :class:`Compose` and the DataLoader accept: ``transform(batch, rng) -> batch``."""

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# validation helpers


def _check_batch(name: str, batch: Any, floating: bool = True) -> np.ndarray:
    """The batch as an ndarray (N, C, H, W), or a ShapeError/DtypeError naming the transform."""
    if not isinstance(batch, np.ndarray):
        raise DtypeError(f"{name}: expected a NumPy array, received {type(batch).__name__}")
    if batch.ndim != 4:
        raise ShapeError(
            f"{name}: expected a batch of shape (N, C, H, W), received shape {batch.shape}"
        )
    if floating and batch.dtype.kind != "f":
        raise DtypeError(f"{name}: expected a floating-point batch, received dtype {batch.dtype}")
    return batch


def _check_rng(name: str, rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ArgumentError(
            f"{name}: expected rng as a numpy.random.Generator, received {type(rng).__name__}"
        )
    return rng


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range(
    name: str,
    key: str,
    value: Any,
    sizes: tuple[int, ...],
    symmetric: bool = True,
    ordered: bool = True,
) -> tuple[float, ...]:
    """A number d -> (-d, d) (d >= 0), or a sequence of one of ``sizes`` lengths, as floats
    (read as (min, max) pairs when ``ordered``).

    torchvision's ``_setup_angle``: the rule for ``degrees`` and ``shear``.
    """
    if symmetric and _is_number(value):
        if value < 0 or not math.isfinite(value):
            raise ArgumentError(
                f"{name}: expected {key} >= 0 when given as a single number, received "
                f"{key}={value!r}"
            )
        return (-float(value), float(value))
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) not in sizes
        or not all(_is_number(v) and math.isfinite(v) for v in value)
    ):
        lengths = " or ".join(str(s) for s in sizes)
        kind = "a non-negative number or " if symmetric else ""
        raise ArgumentError(
            f"{name}: expected {key} as {kind}a sequence of {lengths} finite numbers, received "
            f"{key}={value!r}"
        )
    values = tuple(float(v) for v in value)
    for low, high in zip(values[0::2], values[1::2], strict=True) if ordered else ():
        if low > high:
            raise ArgumentError(
                f"{name}: expected {key} as (min, max) with min <= max, received {key}={value!r}"
            )
    return values


def _fill(name: str, fill: Any) -> float | tuple[float, ...]:
    if _is_number(fill):
        return float(fill)
    if (
        isinstance(fill, Sequence)
        and not isinstance(fill, str)
        and len(fill) >= 1
        and all(_is_number(v) for v in fill)
    ):
        return tuple(float(v) for v in fill)
    raise ArgumentError(
        f"{name}: expected fill as a number or a sequence of numbers (one per channel), "
        f"received fill={fill!r}"
    )


def _per_channel(name: str, key: str, value: float | tuple[float, ...], channels: int) -> Any:
    """A number, or a per-channel tuple broadcast to (1, C, 1, 1)."""
    if isinstance(value, tuple):
        if len(value) not in (1, channels):
            raise ShapeError(
                f"{name}: expected {key} with 1 or {channels} values (the batch's channels), "
                f"received {len(value)}"
            )
        return np.asarray(value, dtype=np.float64).reshape(1, -1, 1, 1)
    return value


def _pair(name: str, key: str, value: Any, positive: bool = True) -> tuple[int, int]:
    """An int s -> (s, s); a sequence (s,) -> (s, s); (h, w) -> (h, w)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values: tuple[Any, ...] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) in (1, 2):
        values = tuple(value) * (2 // len(value))
    else:
        values = ()
    if len(values) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and (int(v) > 0 or not positive)
        for v in values
    ):
        raise ArgumentError(
            f"{name}: expected {key} as a positive integer or a sequence (h, w) of them, "
            f"received {key}={value!r}"
        )
    return int(values[0]), int(values[1])


# ---------------------------------------------------------------------------------------------
# Compose, Normalize


class Compose:
    """Apply transforms one after the other, all drawing from the same generator.

    Args:
        transforms: callables ``t(batch, rng) -> batch``.

    See: torchvision.transforms.Compose
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        transforms = list(transforms)
        for position, transform in enumerate(transforms):
            if not callable(transform):
                raise ArgumentError(
                    f"Compose: expected callables transform(batch, rng), received "
                    f"{type(transform).__name__} at position {position}"
                )
        self.transforms = transforms

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        for transform in self.transforms:
            batch = transform(batch, rng)  # type: ignore[arg-type]  # random ones check it
        return batch

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Normalize:
    """Per-channel standardisation: ``out[:, c] = (batch[:, c] - mean[c]) / std[c]``.

    Deterministic; ``rng`` is accepted (and ignored) so it composes with the random transforms.

    Args:
        mean: one number per channel (or one for all).
        std: one non-zero number per channel (or one for all).
        inplace: write into the input batch instead of a new array. Default: False.

    Shape:
        (N, C, H, W) floating point -> same shape and dtype.

    See: torchvision.transforms.Normalize
    """

    def __init__(
        self, mean: float | Sequence[float], std: float | Sequence[float], inplace: bool = False
    ) -> None:
        self.mean = _numbers("Normalize", "mean", mean)
        self.std = _numbers("Normalize", "std", std)
        if any(s == 0 for s in self.std):
            raise ArgumentError(
                f"Normalize: expected a non-zero std, received std={std!r} (division by zero)"
            )
        self.inplace = bool(inplace)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        batch = _check_batch(repr(self), batch)
        channels = batch.shape[1]
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ShapeError(
                    f"{self!r}: expected {key} with 1 or {channels} values (the batch's "
                    f"channels), received {len(values)}"
                )
        mean = np.asarray(self.mean, dtype=batch.dtype).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=batch.dtype).reshape(1, -1, 1, 1)
        if self.inplace:
            batch -= mean
            batch /= std
            return batch
        return (batch - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)})"


def _numbers(name: str, key: str, value: Any) -> tuple[float, ...]:
    if _is_number(value):
        return (float(value),)
    if (
        isinstance(value, Sequence | np.ndarray)
        and not isinstance(value, str)
        and len(value) >= 1
        and all(_is_number(v) and math.isfinite(v) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ArgumentError(
        f"{name}: expected {key} as a finite number or a sequence of them (one per channel), "
        f"received {key}={value!r}"
    )


# ---------------------------------------------------------------------------------------------
# RandomCrop

_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


class RandomCrop:
    """Crop every image of the batch at its own random position, after optional padding.

    Args:
        size: output (h, w); an int s means (s, s).
        padding: added on each border before cropping: an int (all four sides), (left/right,
            top/bottom), or (left, top, right, bottom). Default: None (no padding).
        pad_if_needed: pad an image smaller than ``size`` (by the missing amount on both sides
            of that dimension, as torchvision does). Default: False.
        fill: the value of ``padding_mode='constant'``, a number or one per channel. Default: 0.
        padding_mode: ``'constant'``, ``'edge'``, ``'reflect'`` (mirror without repeating the
            edge) or ``'symmetric'`` (mirror repeating it), as ``numpy.pad``. Default:
            ``'constant'``.

    Shape:
        (N, C, H, W) -> (N, C, h, w), same dtype. The top-left corner of image n is
        ``(i[n], j[n])``, uniform over ``[0, H_pad - h] x [0, W_pad - w]``.

    See: torchvision.transforms.RandomCrop
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float | Sequence[float] = 0,
        padding_mode: str = "constant",
    ) -> None:
        self.size = _pair("RandomCrop", "size", size)
        self.padding = None if padding is None else _padding(padding)
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = _fill("RandomCrop", fill)
        if padding_mode not in _PADDING_MODES:
            raise ArgumentError(
                f"RandomCrop: expected padding_mode in {_PADDING_MODES}, received "
                f"padding_mode={padding_mode!r}"
            )
        self.padding_mode = padding_mode

    def _pad(self, batch: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        widths = ((0, 0), (0, 0), (top, bottom), (left, right))
        if self.padding_mode != "constant":
            height, width = batch.shape[2:]
            if self.padding_mode == "reflect" and (
                max(top, bottom) >= height or max(left, right) >= width
            ):
                raise ShapeError(
                    f"{self!r}: expected reflect padding smaller than the image, received "
                    f"padding (left, top, right, bottom)={(left, top, right, bottom)} for images "
                    f"of {height}x{width}"
                )
            return np.pad(batch, widths, mode=self.padding_mode)  # type: ignore[call-overload]
        fill = _per_channel(repr(self), "fill", self.fill, batch.shape[1])
        if isinstance(fill, float):
            return np.pad(batch, widths, mode="constant", constant_values=fill)
        out = np.empty(
            (batch.shape[0], batch.shape[1], batch.shape[2] + top + bottom,
             batch.shape[3] + left + right),
            dtype=batch.dtype,
        )
        out[...] = fill
        out[:, :, top : top + batch.shape[2], left : left + batch.shape[3]] = batch
        return out

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch = _check_batch(repr(self), batch, floating=False)
        rng = _check_rng(repr(self), rng)
        if self.padding is not None:
            batch = self._pad(batch, *self.padding)
        height, width = self.size
        if self.pad_if_needed and batch.shape[3] < width:
            extra = width - batch.shape[3]
            batch = self._pad(batch, extra, 0, extra, 0)
        if self.pad_if_needed and batch.shape[2] < height:
            extra = height - batch.shape[2]
            batch = self._pad(batch, 0, extra, 0, extra)
        n, _, padded_height, padded_width = batch.shape
        if padded_height < height or padded_width < width:
            raise ShapeError(
                f"{self!r}: expected images of at least {height}x{width} after padding, "
                f"received {padded_height}x{padded_width}"
            )
        top = rng.integers(0, padded_height - height + 1, size=n)
        left = rng.integers(0, padded_width - width + 1, size=n)
        # (N, C, H_pad - h + 1, W_pad - w + 1, h, w): every crop, as a view; one gather picks
        # each image's own -> (N, C, h, w)
        windows = np.lib.stride_tricks.sliding_window_view(batch, (height, width), axis=(2, 3))
        return windows[np.arange(n), :, top, left]

    def __repr__(self) -> str:
        return (
            f"RandomCrop(size={self.size}, padding={self.padding}, "
            f"pad_if_needed={self.pad_if_needed}, fill={self.fill}, "
            f"padding_mode={self.padding_mode!r})"
        )


def _padding(padding: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) from an int, (left/right, top/bottom) or a 4-tuple."""
    def non_negative_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0

    if non_negative_int(padding):
        padding = [padding]
    if (
        isinstance(padding, Sequence)
        and not isinstance(padding, str)
        and len(padding) in (1, 2, 4)
        and all(non_negative_int(v) for v in padding)
    ):
        # 1 -> all sides, 2 -> (left/right, top/bottom), 4 -> as given
        left, top, right, bottom = (list(map(int, padding)) * 4)[:4]
        return left, top, right, bottom
    raise ArgumentError(
        "RandomCrop: expected padding as a non-negative integer or a sequence of 1, 2 or 4 of "
        f"them, received padding={padding!r}"
    )


# ---------------------------------------------------------------------------------------------
# affine


def _per_image(key: str, value: Any, n: int, width: int) -> np.ndarray:
    """A scalar, a (width,) sequence or an (N, width) array as a float64 (N, width) array."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full((n, width), float(array)) if width == 1 else array.reshape(1).repeat(width)
    if array.shape == (width,):
        array = np.broadcast_to(array, (n, width))
    elif width == 1 and array.shape == (n,):
        array = array.reshape(n, 1)
    if array.shape != (n, width):
        raise ShapeError(
            f"affine: expected {key} as a number, {'(2,) or ' if width == 2 else ''}"
            f"({n},{'' if width == 1 else ' 2'}) per image, received shape {np.shape(value)}"
        )
    return array


def inverse_affine_matrix(
    angle: float | np.ndarray,
    translate: Sequence[float] | np.ndarray,
    scale: float | np.ndarray,
    shear: float | Sequence[float] | np.ndarray,
    center: Sequence[float] | np.ndarray = (0.0, 0.0),
) -> np.ndarray:
    """The output-to-input map of an affine image transform, one per image: (N, 2, 3).

    torchvision's ``_get_inverse_affine_matrix``, vectorised. The forward map of a point is

        p_out = c + t + s * R(-angle) @ Sh_y(shear_y) @ Sh_x(shear_x) @ (p_in - c)

    with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (so a positive angle turns the image
    counter-clockwise on screen, where y points down), ``Sh_x(u) = [[1, -tan u], [0, 1]]``,
    ``Sh_y(v) = [[1, 0], [-tan v, 1]]``, scale ``s``, translation ``t`` and centre ``c``. This
    returns its inverse, ``p_in = M[:, :2] @ p_out + M[:, 2]``; the rotation-shear part has
    determinant 1, so its inverse is the adjugate divided by ``s``. Coordinates are those the
    points are given in (for :func:`affine`: pixels measured from the image centre).

    Args:
        angle: degrees, a number or (N,).
        translate: (tx, ty) in pixels, or (N, 2).
        scale: > 0, a number or (N,).
        shear: degrees; a number sx (then sy = 0), (sx, sy), or (N, 2).
        center: (cx, cy), the fixed point of rotation, scale and shear. Default: the origin.

    Returns:
        (N, 2, 3) float64, N = the batch size of the array arguments (1 if all are scalars).
    """
    # the batch size: the length of any per-image argument ((N,) angle or scale, (N, 2) others)
    sizes = {np.shape(v)[0] for v in (angle, scale) if np.ndim(v) == 1}
    sizes |= {np.shape(v)[0] for v in (translate, shear) if np.ndim(v) == 2}
    n = max(sizes) if sizes else 1
    if np.ndim(shear) == 0:
        shear = (float(shear), 0.0)  # type: ignore[arg-type]
    angle_ = _per_image("angle", angle, n, 1)[:, 0]
    translate_ = _per_image("translate", translate, n, 2)
    scale_ = _per_image("scale", scale, n, 1)[:, 0]
    shear_ = _per_image("shear", shear, n, 2)
    rot = np.radians(-angle_)
    sx, sy = np.radians(shear_[:, 0]), np.radians(shear_[:, 1])
    cx, cy = float(center[0]), float(center[1])
    tx, ty = translate_[:, 0], translate_[:, 1]
    # rotation-shear without scale, [[a, b], [c, d]], det 1
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    matrix = np.empty((n, 2, 3))
    # inverse of the 2x2 (det 1) over the scale, then the inverse translations around the centre
    matrix[:, 0, 0], matrix[:, 0, 1] = d / scale_, -b / scale_
    matrix[:, 1, 0], matrix[:, 1, 1] = -c / scale_, a / scale_
    matrix[:, 0, 2] = matrix[:, 0, 0] * (-cx - tx) + matrix[:, 0, 1] * (-cy - ty) + cx
    matrix[:, 1, 2] = matrix[:, 1, 0] * (-cx - tx) + matrix[:, 1, 1] * (-cy - ty) + cy
    return matrix


def _bilinear(batch: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample every image at its own points, bilinearly, zero outside: (N, C, P).

    ``x``, ``y``: (N, P) pixel coordinates (pixel centres at integers), like ``grid_sample`` with
    ``align_corners=False, padding_mode='zeros'``:
    ``out = sum over the 4 neighbours (x_k, y_k) of (1 - |x - x_k|)(1 - |y - y_k|) img[y_k, x_k]``,
    with img = 0 off the image. A one-pixel zero border plus clipping the neighbour indices into
    [-1, W] makes every out-of-image neighbour read a zero, so the gather needs no mask.
    """
    n, channels, height, width = batch.shape
    points = x.shape[1]
    padded = np.zeros((n, channels, height + 2, width + 2), dtype=batch.dtype)
    padded[:, :, 1:-1, 1:-1] = batch
    x0, y0 = np.floor(x), np.floor(y)
    wx1, wy1 = (x - x0).astype(batch.dtype), (y - y0).astype(batch.dtype)
    wx0, wy0 = 1 - wx1, 1 - wy1
    # neighbour indices in the padded image, (N, P) each
    col0 = (np.clip(x0, -1, width) + 1).astype(np.intp)
    col1 = (np.clip(x0 + 1, -1, width) + 1).astype(np.intp)
    row0 = (np.clip(y0, -1, height) + 1).astype(np.intp) * (width + 2)
    row1 = (np.clip(y0 + 1, -1, height) + 1).astype(np.intp) * (width + 2)
    plane = (height + 2) * (width + 2)
    # (N, C, 1) start of each (image, channel) plane in the flat padded batch
    base = (np.arange(n * channels, dtype=np.intp) * plane).reshape(n, channels, 1)
    flat = padded.reshape(-1)
    out = np.empty((n, channels, points), dtype=batch.dtype)
    np.multiply(flat.take(base + (row0 + col0)[:, None]), (wy0 * wx0)[:, None], out=out)
    out += flat.take(base + (row0 + col1)[:, None]) * (wy0 * wx1)[:, None]
    out += flat.take(base + (row1 + col0)[:, None]) * (wy1 * wx0)[:, None]
    out += flat.take(base + (row1 + col1)[:, None]) * (wy1 * wx1)[:, None]
    return out


def _warp(batch: np.ndarray, matrix: np.ndarray, fill: Any) -> np.ndarray:
    """Warp each image by its (2, 3) output-to-input matrix in centred pixel coordinates."""
    n, channels, height, width = batch.shape
    # output pixel centres measured from the image centre ((W - 1) / 2, (H - 1) / 2)
    xs = np.arange(width, dtype=np.float64) - (width - 1) / 2
    ys = np.arange(height, dtype=np.float64) - (height - 1) / 2
    grid_x = np.broadcast_to(xs, (height, width)).reshape(-1)
    grid_y = np.broadcast_to(ys[:, None], (height, width)).reshape(-1)
    # (N, P) input coordinates in pixels from the top-left pixel centre
    x = (matrix[:, 0, 0, None] * grid_x + matrix[:, 0, 1, None] * grid_y
         + (matrix[:, 0, 2, None] + (width - 1) / 2))
    y = (matrix[:, 1, 0, None] * grid_x + matrix[:, 1, 1, None] * grid_y
         + (matrix[:, 1, 2, None] + (height - 1) / 2))
    if isinstance(fill, float) and fill == 0:
        out = _bilinear(batch, x, y)
    else:
        fill_ = np.asarray(fill, dtype=batch.dtype).reshape(-1, 1, 1)  # (1 or C, 1, 1)
        out = _bilinear(batch - fill_, x, y)
        out += fill_.reshape(1, -1, 1)
    return out.reshape(n, channels, height, width)


def affine(
    batch: np.ndarray,
    angle: float | np.ndarray,
    translate: Sequence[float] | np.ndarray,
    scale: float | np.ndarray,
    shear: float | Sequence[float] | np.ndarray,
    fill: float | Sequence[float] = 0,
    center: Sequence[float] | None = None,
) -> np.ndarray:
    """Rotate, translate, scale and shear every image of a batch, bilinearly, about its centre.

    ``out[n](p) = in[n](M_n p)`` with ``M_n`` = :func:`inverse_affine_matrix` of image n's
    parameters, p the output pixel centre measured from the image centre, and bilinear
    interpolation with the image surrounded by ``fill``. For ``fill=0`` this equals
    ``torch.nn.functional.grid_sample(x, affine_grid(theta, x.shape, align_corners=False),
    mode='bilinear', padding_mode='zeros', align_corners=False)`` with ``theta`` the matrix in
    normalised coordinates.

    Args:
        batch: (N, C, H, W) floating point.
        angle: degrees, counter-clockwise on screen; a number or (N,) per image.
        translate: (tx, ty) in pixels (right, down), or (N, 2).
        scale: > 0, a number or (N,).
        shear: degrees; a number sx (x-shear only), (sx, sy), or (N, 2).
        fill: the value outside the image, a number or one per channel. Default: 0.
        center: the fixed point (cx, cy) in pixels from the image's top-left corner, where the
            image centre is (W / 2, H / 2), as in torchvision's tensor path. Default: None (the
            image centre).

    Returns:
        (N, C, H, W), the input's dtype.

    See: torchvision.transforms.functional.affine (bilinear, tensor path)
    """
    batch = _check_batch("affine", batch)
    scale_array = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(scale_array) & (scale_array > 0)):
        raise ArgumentError(f"affine: expected scale > 0, received scale={scale!r}")
    height, width = batch.shape[2:]
    center_ = (0.0, 0.0) if center is None else (center[0] - width / 2, center[1] - height / 2)
    matrix = inverse_affine_matrix(angle, translate, scale, shear, center_)
    if matrix.shape[0] not in (1, batch.shape[0]):
        raise ShapeError(
            f"affine: expected per-image parameters for the {batch.shape[0]} images of the "
            f"batch, received {matrix.shape[0]}"
        )
    matrix = np.broadcast_to(matrix, (batch.shape[0], 2, 3))
    fill_ = _per_channel("affine", "fill", _fill("affine", fill), batch.shape[1])
    if not isinstance(fill_, float):
        fill_ = fill_.reshape(-1)
    return _warp(batch, matrix, fill_)


class RandomAffine:
    """A random affine transform per image: rotation, translation, scale and shear, bilinear.

    Image n gets ``angle ~ U(degrees)``, ``tx ~ round(U(-translate[0] W, translate[0] W))``,
    ``ty ~ round(U(-translate[1] H, translate[1] H))`` pixels, ``scale ~ U(scale)``,
    ``shear_x ~ U(shear[0:2])``, ``shear_y ~ U(shear[2:4])``, then :func:`affine`.

    Args:
        degrees: a number d (range (-d, d)) or (min, max), in degrees; 0 turns rotation off.
        translate: (a, b): the largest horizontal and vertical shifts as fractions of width and
            height, each in [0, 1]. Default: None (no translation).
        scale: (min, max) scale factors, both > 0. Default: None (scale 1).
        shear: a number s (x-shear in (-s, s)), (min, max) for the x-shear, or (x_min, x_max,
            y_min, y_max), in degrees. Default: None (no shear).
        fill: the value outside the image, a number or one per channel. Default: 0.
        center: the fixed point, (cx, cy) in pixels from the top-left corner. Default: None (the
            image centre).

    Shape:
        (N, C, H, W) floating point -> same shape and dtype.

    See: torchvision.transforms.RandomAffine (whose default interpolation is nearest; this one
    is bilinear).
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        shear: float | Sequence[float] | None = None,
        fill: float | Sequence[float] = 0,
        center: Sequence[float] | None = None,
    ) -> None:
        self.degrees = _range("RandomAffine", "degrees", degrees, (2,))
        self.translate = (
            None if translate is None
            else _range(
                "RandomAffine", "translate", translate, (2,), symmetric=False, ordered=False
            )
        )
        if self.translate is not None and not all(0 <= t <= 1 for t in self.translate):
            raise ArgumentError(
                f"RandomAffine: expected translate fractions in [0, 1], received "
                f"translate={translate!r}"
            )
        self.scale = (
            None if scale is None else _range("RandomAffine", "scale", scale, (2,), symmetric=False)
        )
        if self.scale is not None and not all(s > 0 for s in self.scale):
            raise ArgumentError(
                f"RandomAffine: expected scale factors > 0, received scale={scale!r}"
            )
        self.shear = None if shear is None else _range("RandomAffine", "shear", shear, (2, 4))
        self.fill = _fill("RandomAffine", fill)
        if center is not None and (
            not isinstance(center, Sequence) or len(center) != 2
            or not all(_is_number(v) for v in center)
        ):
            raise ArgumentError(
                f"RandomAffine: expected center as (cx, cy), received center={center!r}"
            )
        self.center = center

    def get_params(
        self, n: int, height: int, width: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Draw n images' parameters: ``angle`` (N,), ``translate`` (N, 2), ``scale`` (N,),
        ``shear`` (N, 2); the draws happen in that order, only for the parts that are on."""
        angle = rng.uniform(self.degrees[0], self.degrees[1], size=n)
        translate = np.zeros((n, 2))
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            translate[:, 0] = np.rint(rng.uniform(-max_dx, max_dx, size=n))
            translate[:, 1] = np.rint(rng.uniform(-max_dy, max_dy, size=n))
        scale = np.ones(n) if self.scale is None else rng.uniform(self.scale[0], self.scale[1], n)
        shear = np.zeros((n, 2))
        if self.shear is not None:
            shear[:, 0] = rng.uniform(self.shear[0], self.shear[1], size=n)
            if len(self.shear) == 4:
                shear[:, 1] = rng.uniform(self.shear[2], self.shear[3], size=n)
        return {"angle": angle, "translate": translate, "scale": scale, "shear": shear}

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch = _check_batch(repr(self), batch)
        rng = _check_rng(repr(self), rng)
        _per_channel(repr(self), "fill", self.fill, batch.shape[1])
        n, _, height, width = batch.shape
        params = self.get_params(n, height, width, rng)
        return affine(batch, fill=self.fill, center=self.center, **params)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        parts = [f"degrees={self.degrees}"]
        for key in ("translate", "scale", "shear"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={getattr(self, key)}")
        if self.fill != 0:
            parts.append(f"fill={self.fill}")
        if self.center is not None:
            parts.append(f"center={tuple(self.center)}")
        return f"RandomAffine({', '.join(parts)})"


# ---------------------------------------------------------------------------------------------
# RandomErasing

_ERASING_TRIES = 10


class RandomErasing:
    """Erase one random rectangle of each image with probability ``p``.

    For each image, with probability p: up to 10 tries of ``area ~ U(scale) * H * W``,
    ``log(aspect) ~ U(log ratio)``, ``h = round(sqrt(area * aspect))``,
    ``w = round(sqrt(area / aspect))``; the first try with ``h < H`` and ``w < W`` is placed at a
    uniform top-left corner and set to ``value``; if none fits, the image is left as it is.

    Args:
        p: probability of erasing an image. Default: 0.5.
        scale: (min, max) erased fraction of the image area, within [0, 1]. Default: (0.02, 0.33).
        ratio: (min, max) aspect ratio h / w of the rectangle, > 0. Default: (0.3, 3.3).
        value: the erasing value: a number, one per channel, or ``'random'`` (standard normal
            noise per pixel). Default: 0.
        inplace: write into the input batch. Default: False.

    Shape:
        (N, C, H, W) -> same shape and dtype.

    See: torchvision.transforms.RandomErasing
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0,
        inplace: bool = False,
    ) -> None:
        if not _is_number(p) or not 0 <= p <= 1:
            raise ArgumentError(f"RandomErasing: expected p in [0, 1], received p={p!r}")
        self.p = float(p)
        self.scale = _range("RandomErasing", "scale", scale, (2,), symmetric=False)
        if not (0 <= self.scale[0] and self.scale[1] <= 1):
            raise ArgumentError(
                f"RandomErasing: expected scale within [0, 1], received scale={scale!r}"
            )
        self.ratio = _range("RandomErasing", "ratio", ratio, (2,), symmetric=False)
        if not self.ratio[0] > 0:
            raise ArgumentError(
                f"RandomErasing: expected ratio > 0, received ratio={ratio!r}"
            )
        if isinstance(value, str):
            if value != "random":
                raise ArgumentError(
                    f"RandomErasing: expected value as a number, a sequence of numbers or "
                    f"'random', received value={value!r}"
                )
            self.value: float | tuple[float, ...] | str = value
        else:
            self.value = _fill("RandomErasing", value)
        self.inplace = bool(inplace)

    def get_params(
        self, n: int, height: int, width: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw the rectangles of n images: ``erase`` (N,) bool, ``top``, ``left``, ``h``, ``w``
        (N,) int64; an image that is not erased has h = w = 0."""
        erase = rng.random(n) < self.p
        area = height * width
        log_ratio = np.log(self.ratio)
        # (N, tries): all tries drawn at once, the first valid one used
        areas = area * rng.uniform(self.scale[0], self.scale[1], size=(n, _ERASING_TRIES))
        aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, _ERASING_TRIES)))
        hs = np.rint(np.sqrt(areas * aspect)).astype(np.int64)
        ws = np.rint(np.sqrt(areas / aspect)).astype(np.int64)
        valid = (hs < height) & (ws < width)
        first = np.argmax(valid, axis=1)
        rows = np.arange(n)
        erase &= valid[rows, first]
        h = np.where(erase, hs[rows, first], 0)
        w = np.where(erase, ws[rows, first], 0)
        top = rng.integers(0, height - h + 1)  # (N,), each in [0, H - h]
        left = rng.integers(0, width - w + 1)
        return erase, top, left, h, w

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch = _check_batch(repr(self), batch, floating=self.value == "random")
        rng = _check_rng(repr(self), rng)
        n, channels, height, width = batch.shape
        value: Any = None
        if self.value != "random":
            value = _per_channel(repr(self), "value", self.value, channels)  # type: ignore[arg-type]
        _, top, left, h, w = self.get_params(n, height, width, rng)
        rows = np.arange(height)
        cols = np.arange(width)
        # (N, 1, H, W): inside image n's rectangle
        inside = (
            ((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, None, :, None]
            & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, None, :]
        )
        if self.value == "random":
            noise_dtype = np.float32 if batch.dtype == np.float32 else np.float64
            value = rng.standard_normal(batch.shape, dtype=noise_dtype)
        if self.inplace:
            np.copyto(batch, np.asarray(value, dtype=batch.dtype), where=inside)
            return batch
        return np.where(inside, np.asarray(value, dtype=batch.dtype), batch)

    def __repr__(self) -> str:
        return (
            f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, "
            f"value={self.value!r})"
        )



# ---------------------------------------------------------------------------------------------
# from a config (a list of tables in a TOML spec)

TRANSFORMS: dict[str, type] = {
    "Normalize": Normalize,
    "RandomAffine": RandomAffine,
    "RandomCrop": RandomCrop,
    "RandomErasing": RandomErasing,
}


def from_config(config: Sequence[Mapping[str, Any]], where: str = "transforms") -> Compose:
    """Build a :class:`Compose` from plain data, e.g. a TOML spec's list of tables::

        [[augment]]
        name = "RandomAffine"
        degrees = 10
        translate = [0.1, 0.1]

        [[augment]]
        name = "RandomErasing"
        p = 0.5

    Args:
        config: a sequence of mappings, each with ``name`` (one of :data:`TRANSFORMS`) and the
            constructor's keyword arguments (lists stand for tuples).
        where: names the source in error messages (a file and key, say). Default:
            ``"transforms"``.

    Raises:
        ArgumentError: not a sequence of mappings, an unknown name, an unknown or missing key,
            or a value the transform refuses (its own message, prefixed with ``where``).
    """
    if not isinstance(config, Sequence) or isinstance(config, str):
        raise ArgumentError(
            f"{where}: expected a list of tables with a 'name' each, received "
            f"{type(config).__name__}"
        )
    transforms = []
    for index, item in enumerate(config):
        if not isinstance(item, Mapping) or "name" not in item:
            raise ArgumentError(
                f"{where}[{index}]: expected a table with a 'name' key, received {item!r}"
            )
        name = item["name"]
        if name not in TRANSFORMS:
            raise ArgumentError(
                f"{where}[{index}]: unknown transform name={name!r}; expected one of "
                f"{sorted(TRANSFORMS)}"
            )
        cls = TRANSFORMS[name]
        keys = {key: value for key, value in item.items() if key != "name"}
        accepted = [key for key in inspect.signature(cls).parameters]
        unknown = sorted(set(keys) - set(accepted))
        if unknown:
            raise ArgumentError(
                f"{where}[{index}]: {name} has no argument {unknown[0]!r}; expected keys among "
                f"{accepted}"
            )
        missing = [
            key for key, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is inspect.Parameter.empty and key not in keys
        ]
        if missing:
            raise ArgumentError(f"{where}[{index}]: {name} needs the key {missing[0]!r}")
        try:
            transforms.append(cls(**keys))
        except (ArgumentError, ShapeError) as error:
            raise ArgumentError(f"{where}[{index}]: {error}") from None
    return Compose(transforms)
