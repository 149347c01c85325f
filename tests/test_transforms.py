"""Batch augmentation: torch's affine_grid + grid_sample as the oracle for the warp, explicit
NumPy padding and slicing for the crop, geometry (rotation by 90 degrees, centre of mass under
translation), erased rectangles within their bounds, seeded repeatability, errors by message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convgrad.data.transforms import (
    Compose,
    Normalize,
    RandomAffine,
    RandomCrop,
    RandomErasing,
    affine,
    from_config,
    inverse_affine_matrix,
)
from convgrad.errors import ArgumentError, DtypeError, ShapeError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def torch_warp(batch: np.ndarray, matrix: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """grid_sample(bilinear, zeros, align_corners=False) of ``batch - fill``, plus ``fill``, with
    ``matrix`` (N, 2, 3) in centred pixel coordinates turned into affine_grid's normalised one."""
    n, channels, height, width = batch.shape
    theta = matrix.copy()
    theta[:, 0, 1] *= height / width
    theta[:, 1, 0] *= width / height
    theta[:, 0, 2] *= 2 / width
    theta[:, 1, 2] *= 2 / height
    grid = torch.nn.functional.affine_grid(
        torch.from_numpy(theta), [n, channels, height, width], align_corners=False
    )
    out = torch.nn.functional.grid_sample(
        torch.from_numpy(batch - fill), grid.to(torch.float64 if batch.dtype == np.float64
                                                 else torch.float32),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )
    return out.numpy() + fill


def torchvision_inverse_affine_matrix(center, angle, translate, scale, shear):
    """torchvision.transforms.functional._get_inverse_affine_matrix, transcribed line by line."""
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    matrix = [d, -b, 0.0, -c, a, 0.0]
    matrix = [x / scale for x in matrix]
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
    matrix[2] += cx
    matrix[5] += cy
    return np.array(matrix).reshape(2, 3)


def random_params(generator: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "angle": generator.uniform(-180, 180, n),
        "translate": generator.uniform(-4, 4, (n, 2)),
        "scale": generator.uniform(0.5, 1.6, n),
        "shear": generator.uniform(-30, 30, (n, 2)),
    }


def blob(height: int = 28, width: int = 28, n: int = 1) -> np.ndarray:
    """A digit-like pattern of two smooth strokes, exactly zero beyond 7 pixels from the centre
    (so moving it a few pixels loses no mass): (n, 1, H, W) float64."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x -= width / 2
    y -= height / 2

    def bump(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return np.maximum(0.0, 1 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2) ** 2

    image = bump(-1.5, 0.0, 4.5, 5.5) + 0.6 * bump(2.0, -3.0, 2.0, 4.0)
    return np.broadcast_to(image, (n, 1, height, width)).copy()


def centre_of_mass(batch: np.ndarray) -> np.ndarray:
    """(N, 2): (x, y) per image."""
    height, width = batch.shape[2:]
    y, x = np.mgrid[0:height, 0:width]
    mass = batch.sum(axis=(1, 2, 3))
    return np.stack([(batch * x).sum(axis=(1, 2, 3)), (batch * y).sum(axis=(1, 2, 3))], 1) / (
        mass[:, None]
    )


# ---------------------------------------------------------------------------------------------
# affine: the matrix, the warp against torch, geometry


@pytest.mark.parametrize("center", [(0.0, 0.0), (3.5, -2.0)])
def test_inverse_affine_matrix_is_torchvisions(center):
    params = random_params(rng(1), 6)
    matrix = inverse_affine_matrix(center=center, **params)
    for k in range(6):
        expected = torchvision_inverse_affine_matrix(
            center, -params["angle"][k], params["translate"][k], params["scale"][k],
            params["shear"][k],
        )
        np.testing.assert_allclose(matrix[k], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 2, 13, 17), (2, 3, 16, 9), (1, 1, 1, 4)])
@pytest.mark.parametrize("fill", [0.0, 0.7])
def test_affine_matches_torch_grid_sample_float64(shape, fill):
    generator = rng(2)
    batch = generator.random(shape)
    params = random_params(generator, shape[0])
    out = affine(batch, fill=fill, **params)
    expected = torch_warp(batch, inverse_affine_matrix(**params), fill)
    assert out.shape == shape and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_affine_matches_torch_in_float32():
    generator = rng(3)
    batch = generator.random((8, 1, 28, 28), dtype=np.float32)
    params = random_params(generator, 8)
    out = affine(batch, **params)
    assert out.dtype == np.float32
    expected = torch_warp(batch.astype(np.float64), inverse_affine_matrix(**params))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 12), width=st.integers(1, 12), channels=st.integers(1, 3),
    angle=st.floats(-360, 360), tx=st.floats(-15, 15), ty=st.floats(-15, 15),
    scale=st.floats(0.1, 4), shear_x=st.floats(-60, 60), shear_y=st.floats(-60, 60),
    fill=st.sampled_from([0.0, -1.0, 0.25]),
)
def test_affine_matches_torch_on_generated_cases(
    height, width, channels, angle, tx, ty, scale, shear_x, shear_y, fill
):
    batch = rng(height * 13 + width).standard_normal((2, channels, height, width))
    params = {"angle": angle, "translate": (tx, ty), "scale": scale, "shear": (shear_x, shear_y)}
    expected = torch_warp(batch, np.repeat(inverse_affine_matrix(**params), 2, axis=0), fill)
    np.testing.assert_allclose(affine(batch, fill=fill, **params), expected, rtol=0, atol=1e-10)


def test_per_channel_fill():
    batch = rng(4).random((2, 3, 10, 10))
    out = affine(batch, 30, (3, -2), 0.8, 0, fill=(1.0, 2.0, 3.0))
    matrix = np.repeat(inverse_affine_matrix(30, (3, -2), 0.8, 0), 2, axis=0)
    for c, fill in enumerate((1.0, 2.0, 3.0)):
        np.testing.assert_allclose(
            out[:, c : c + 1], torch_warp(batch[:, c : c + 1], matrix, fill), atol=1e-12
        )
    assert out[0, 2, 0, 0] == pytest.approx(3.0)  # a corner that maps far outside


@pytest.mark.parametrize("size", [8, 9, 28])
def test_rotation_by_90_degrees_is_rot90(size):
    batch = rng(5).random((3, 2, size, size))
    np.testing.assert_allclose(affine(batch, 90, (0, 0), 1, 0), np.rot90(batch, 1, axes=(2, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(affine(batch, -90, (0, 0), 1, 0), np.rot90(batch, -1, axes=(2, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(affine(batch, 180, (0, 0), 1, 0), batch[:, :, ::-1, ::-1],
                               atol=1e-12)


def test_identity_and_integer_translation_are_exact():
    batch = rng(6).random((2, 1, 7, 9))
    np.testing.assert_array_equal(affine(batch, 0, (0, 0), 1, 0), batch)
    shifted = affine(batch, 0, (2, -1), 1, 0)  # right by 2, up by 1
    np.testing.assert_allclose(shifted[:, :, :-1, 2:], batch[:, :, 1:, :-2], atol=1e-15)
    assert not shifted[:, :, :, :2].any() and not shifted[:, :, -1, :].any()


@pytest.mark.parametrize("translate", [(3, -2), (1.5, 2.25), (-4.75, 0)])
def test_translation_moves_the_centre_of_mass_by_the_translation(translate):
    digit = blob()
    moved = affine(digit, 0, translate, 1, 0)
    np.testing.assert_allclose(centre_of_mass(moved) - centre_of_mass(digit), [translate],
                               atol=1e-9)


def test_rotation_and_scale_about_the_centre():
    digit = blob()
    centre = np.array([13.5, 13.5])  # (W - 1) / 2: the pixel-index centre
    offset = centre_of_mass(digit)[0] - centre
    turned = affine(digit, 90, (0, 0), 1, 0)  # counter-clockwise on screen (y down)
    np.testing.assert_allclose(centre_of_mass(turned)[0] - centre, [offset[1], -offset[0]],
                               atol=1e-9)
    scaled = affine(digit, 0, (0, 0), 1.25, 0)
    np.testing.assert_allclose(centre_of_mass(scaled)[0] - centre, 1.25 * offset, atol=0.02)


def test_random_affine_translation_moves_each_digit_by_its_drawn_shift():
    transform = RandomAffine(0, translate=(0.15, 0.1))
    digits = blob(n=16)
    out = transform(digits, rng(7))
    params = transform.get_params(16, 28, 28, rng(7))
    shifts = params["translate"]
    assert np.all(shifts == np.rint(shifts)) and len(np.unique(shifts, axis=0)) > 4
    assert np.abs(shifts[:, 0]).max() <= round(0.15 * 28) and np.abs(shifts[:, 1]).max() <= 3
    np.testing.assert_allclose(centre_of_mass(out) - centre_of_mass(digits), shifts, atol=1e-9)


def test_random_affine_draws_within_its_ranges():
    transform = RandomAffine((-5, 20), translate=(0.1, 0.2), scale=(0.8, 1.2),
                             shear=(-3, 4, 10, 12))
    params = transform.get_params(2000, 20, 30, rng(8))
    assert -5 <= params["angle"].min() and params["angle"].max() <= 20
    assert params["angle"].mean() == pytest.approx(7.5, abs=0.5)
    assert np.abs(params["translate"][:, 0]).max() <= 3
    assert np.abs(params["translate"][:, 1]).max() <= 4
    assert 0.8 <= params["scale"].min() and params["scale"].max() <= 1.2
    assert -3 <= params["shear"][:, 0].min() and params["shear"][:, 0].max() <= 4
    assert 10 <= params["shear"][:, 1].min() and params["shear"][:, 1].max() <= 12
    symmetric = RandomAffine(10, shear=5).get_params(1000, 8, 8, rng(0))
    assert -10 <= symmetric["angle"].min() < -9 and 9 < symmetric["angle"].max() <= 10
    assert not symmetric["shear"][:, 1].any() and np.abs(symmetric["shear"][:, 0]).max() <= 5


def test_random_affine_applies_the_drawn_parameters():
    transform = RandomAffine(30, translate=(0.1, 0.1), scale=(0.7, 1.3), shear=(-10, 10, -5, 5),
                             fill=0.5)
    batch = rng(9).random((6, 2, 12, 14))
    out = transform(batch, rng(10))
    expected = affine(batch, fill=0.5, **transform.get_params(6, 12, 14, rng(10)))
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------
# RandomCrop


def find_window(padded: np.ndarray, crop: np.ndarray) -> list[tuple[int, int]]:
    """Every (i, j) with padded[:, i:i+h, j:j+w] == crop, for one image (C, H, W)."""
    h, w = crop.shape[1:]
    return [
        (i, j)
        for i in range(padded.shape[1] - h + 1)
        for j in range(padded.shape[2] - w + 1)
        if np.array_equal(padded[:, i : i + h, j : j + w], crop)
    ]


@pytest.mark.parametrize(
    "padding, mode, fill, np_kwargs",
    [
        (4, "constant", 0, {"mode": "constant"}),
        ((2, 3), "constant", -1.0, {"mode": "constant", "constant_values": -1.0}),
        ((1, 2, 3, 0), "edge", 0, {"mode": "edge"}),
        (3, "reflect", 0, {"mode": "reflect"}),
        ((3, 1), "symmetric", 0, {"mode": "symmetric"}),
    ],
)
def test_random_crop_is_a_window_of_the_explicitly_padded_image(padding, mode, fill, np_kwargs):
    batch = rng(11).random((12, 2, 8, 10))  # distinct values: each window is unique
    out = RandomCrop((8, 10), padding=padding, fill=fill, padding_mode=mode)(batch, rng(12))
    assert out.shape == (12, 2, 8, 10)
    if isinstance(padding, int):
        left = top = right = bottom = padding
    elif len(padding) == 2:
        left, top = right, bottom = padding
    else:
        left, top, right, bottom = padding
    padded = np.pad(batch, ((0, 0), (0, 0), (top, bottom), (left, right)), **np_kwargs)
    offsets = []
    for n in range(12):
        found = find_window(padded[n], out[n])
        assert len(found) >= 1
        offsets.append(found[0])
    assert len(set(offsets)) > 3  # each image its own position


def test_random_crop_offsets_cover_the_range_uniformly():
    batch = np.broadcast_to(np.arange(36.0).reshape(1, 1, 6, 6), (3000, 1, 6, 6))
    out = RandomCrop(4)(batch, rng(13))
    corners = out[:, 0, 0, 0].astype(int)  # value 6 i + j at the top-left
    counts = np.bincount(corners, minlength=36).reshape(6, 6)
    assert counts[:3, :3].min() > 3000 / 9 * 0.8 and counts[3:].sum() + counts[:, 3:].sum() == 0


def test_random_crop_pad_if_needed_pads_both_sides_by_the_shortfall():
    batch = rng(14).random((4, 1, 5, 6)).astype(np.float32)
    out = RandomCrop((7, 8), pad_if_needed=True, fill=9)(batch, rng(15))
    assert out.shape == (4, 1, 7, 8) and out.dtype == np.float32
    padded = np.pad(batch, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=9)
    for n in range(4):
        assert find_window(padded[n], out[n])


def test_random_crop_per_channel_fill():
    batch = np.zeros((2, 3, 4, 4))
    out = RandomCrop(8, padding=2, fill=(1, 2, 3))(batch, rng(0))
    np.testing.assert_array_equal(out[:, :, 0, 0], [[1, 2, 3], [1, 2, 3]])


# ---------------------------------------------------------------------------------------------
# RandomErasing


def erased_rectangles(before: np.ndarray, after: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) per image from where the pixels changed; (0, 0, 0, 0) when none did."""
    boxes = []
    for changed in (before != after).any(axis=1):
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        if len(rows) == 0:
            boxes.append((0, 0, 0, 0))
            continue
        top, left = rows[0], cols[0]
        h, w = rows[-1] - top + 1, cols[-1] - left + 1
        assert changed[top : top + h, left : left + w].all() and changed.sum() == h * w
        boxes.append((int(top), int(left), int(h), int(w)))
    return boxes


@pytest.mark.parametrize("scale, ratio", [((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.2), (0.5, 1.0))])
def test_erased_rectangles_are_within_the_scale_and_ratio_bounds(scale, ratio):
    batch = rng(16).random((400, 1, 28, 28)) + 1.0  # never equal to the erase value -1
    out = RandomErasing(p=1.0, scale=scale, ratio=ratio, value=-1)(batch, rng(17))
    area = 28 * 28
    boxes = erased_rectangles(batch, out)
    erased = [b for b in boxes if b[2] > 0]
    assert len(erased) >= 390
    for _, _, h, w in erased:
        assert np.all(out[(out != batch)] == -1)
        # h = round(sqrt(a r)), w = round(sqrt(a / r)) for some a in area * scale, r in ratio
        low_area, high_area = (h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5)
        assert low_area <= scale[1] * area and high_area >= scale[0] * area
        low_ratio, high_ratio = (h - 0.5) / (w + 0.5), (h + 0.5) / (w - 0.5)
        assert low_ratio <= ratio[1] and high_ratio >= ratio[0]
        assert h < 28 and w < 28
    sizes = np.array([(h, w) for _, _, h, w in erased])
    assert len(np.unique(sizes, axis=0)) > 20


def test_random_erasing_probability_and_value():
    batch = rng(18).random((4000, 2, 8, 8)) + 1.0
    out = RandomErasing(p=0.3, value=(-1, -2))(batch, rng(19))
    changed = (out != batch).any(axis=(1, 2, 3))
    assert changed.mean() == pytest.approx(0.3, abs=0.03)
    np.testing.assert_array_equal(np.unique(out[:, 0][out[:, 0] != batch[:, 0]]), [-1])
    np.testing.assert_array_equal(np.unique(out[:, 1][out[:, 1] != batch[:, 1]]), [-2])
    np.testing.assert_array_equal(RandomErasing(p=0)(batch, rng(0)), batch)


def test_random_erasing_random_value_and_inplace():
    batch = np.full((50, 1, 16, 16), 5.0, dtype=np.float32)
    out = RandomErasing(p=1, value="random")(batch, rng(20))
    noise = out[out != 5.0]
    assert out.dtype == np.float32 and noise.size > 1000 and abs(noise.std() - 1) < 0.1
    assert (batch == 5.0).all()  # not in place by default
    same = RandomErasing(p=1, value=0, inplace=True)
    assert same(batch, rng(0)) is batch and (batch == 0).any()


def test_random_erasing_leaves_images_where_no_try_fits():
    batch = rng(21).random((20, 1, 4, 4))
    out = RandomErasing(p=1, scale=(0.95, 1.0), ratio=(1, 1))(batch, rng(0))  # h = w = 4: never
    np.testing.assert_array_equal(out, batch)


# ---------------------------------------------------------------------------------------------
# Normalize, Compose, seeds


def test_normalize_is_the_explicit_formula():
    batch = rng(22).random((4, 3, 5, 6)).astype(np.float32)
    mean, std = (0.1, 0.2, 0.3), (0.5, 2.0, 0.25)
    out = Normalize(mean, std)(batch)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (batch[:, c] - mean[c]) / std[c], rtol=1e-6)
    assert out.dtype == np.float32
    single = Normalize(0.1307, 0.3081)(batch[:, :1])
    np.testing.assert_allclose(single, (batch[:, :1] - 0.1307) / 0.3081, rtol=1e-6)
    copy = batch.copy()
    assert Normalize(mean, std, inplace=True)(copy) is copy
    np.testing.assert_array_equal(copy, out)


def random_pipeline() -> Compose:
    return Compose([
        RandomCrop(28, padding=2),
        RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
        RandomErasing(p=0.5),
        Normalize(0.1307, 0.3081),
    ])


def test_seeded_repeatability_and_different_seeds_differ():
    batch = rng(23).random((64, 1, 28, 28), dtype=np.float32)
    pipeline = random_pipeline()
    first = pipeline(batch, rng(1))
    again = pipeline(batch, rng(1))
    assert first.tobytes() == again.tobytes()
    other = pipeline(batch, rng(2))
    assert not np.array_equal(first, other)
    assert first.shape == batch.shape and first.dtype == np.float32
    for transform in pipeline.transforms[:3]:
        a, b = transform(batch, rng(5)), transform(batch, rng(6))
        assert a.tobytes() == transform(batch, rng(5)).tobytes() and not np.array_equal(a, b)


def test_every_image_gets_its_own_parameters():
    batch = np.broadcast_to(blob(), (32, 1, 28, 28)).copy()
    for transform in (RandomAffine(20), RandomCrop(28, padding=3), RandomErasing(p=1)):
        out = transform(batch, rng(24))
        assert len({image.tobytes() for image in out}) > 15, transform


def test_transforms_do_not_touch_numpys_global_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    random_pipeline()(rng(0).random((4, 1, 28, 28)), rng(1))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: RandomAffine(-5), ArgumentError,
         r"RandomAffine: expected degrees >= 0 when given as a single number, received "
         r"degrees=-5"),
        (lambda: RandomAffine((1, 2, 3)), ArgumentError,
         r"RandomAffine: expected degrees as a non-negative number or a sequence of 2 finite "
         r"numbers, received degrees=\(1, 2, 3\)"),
        (lambda: RandomAffine((10, -10)), ArgumentError,
         r"expected degrees as \(min, max\) with min <= max, received degrees=\(10, -10\)"),
        (lambda: RandomAffine(0, translate=(0.1, 1.5)), ArgumentError,
         r"RandomAffine: expected translate fractions in \[0, 1\], received "
         r"translate=\(0.1, 1.5\)"),
        (lambda: RandomAffine(0, scale=(0, 1)), ArgumentError,
         r"RandomAffine: expected scale factors > 0, received scale=\(0, 1\)"),
        (lambda: RandomAffine(0, scale=0.9), ArgumentError,
         r"RandomAffine: expected scale as a sequence of 2 finite numbers, received scale=0.9"),
        (lambda: RandomAffine(0, shear=(1, 2, 3)), ArgumentError,
         r"expected shear as a non-negative number or a sequence of 2 or 4 finite numbers"),
        (lambda: RandomAffine(0, fill="white"), ArgumentError,
         r"RandomAffine: expected fill as a number or a sequence of numbers"),
        (lambda: RandomCrop(0), ArgumentError,
         r"RandomCrop: expected size as a positive integer or a sequence \(h, w\) of them, "
         r"received size=0"),
        (lambda: RandomCrop(8, padding=(1, 2, 3)), ArgumentError,
         r"RandomCrop: expected padding as a non-negative integer or a sequence of 1, 2 or 4"),
        (lambda: RandomCrop(8, padding_mode="wrap"), ArgumentError,
         r"RandomCrop: expected padding_mode in \('constant', 'edge', 'reflect', 'symmetric'\), "
         r"received padding_mode='wrap'"),
        (lambda: RandomErasing(p=1.5), ArgumentError,
         r"RandomErasing: expected p in \[0, 1\], received p=1.5"),
        (lambda: RandomErasing(scale=(0.1, 1.2)), ArgumentError,
         r"RandomErasing: expected scale within \[0, 1\], received scale=\(0.1, 1.2\)"),
        (lambda: RandomErasing(ratio=(0, 2)), ArgumentError,
         r"RandomErasing: expected ratio > 0, received ratio=\(0, 2\)"),
        (lambda: RandomErasing(value="noise"), ArgumentError,
         r"RandomErasing: expected value as a number, a sequence of numbers or 'random', "
         r"received value='noise'"),
        (lambda: Normalize((0.5,), (0.0,)), ArgumentError,
         r"Normalize: expected a non-zero std, received std=\(0.0,\)"),
        (lambda: Compose([RandomAffine(1), "flip"]), ArgumentError,
         r"Compose: expected callables transform\(batch, rng\), received str at position 1"),
    ],
)
def test_constructor_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "transform",
    [RandomAffine(10), RandomCrop(4), RandomErasing(), Normalize(0.5, 0.5)],
    ids=lambda t: type(t).__name__,
)
def test_a_batch_that_is_not_n_c_h_w_is_refused_naming_the_transform(transform):
    name = type(transform).__name__
    expected = r"expected a batch of shape \(N, C, H, W\), received shape \(28, 28\)"
    with pytest.raises(ShapeError, match=rf"{name}\(.*\): {expected}"):
        transform(np.zeros((28, 28)), rng())
    with pytest.raises(DtypeError, match=rf"{name}\(.*\): expected a NumPy array, received list"):
        transform([[[[0.0]]]], rng())
    if not isinstance(transform, Normalize):
        with pytest.raises(ArgumentError, match=rf"{name}\(.*\): expected rng as a "
                                                r"numpy.random.Generator, received int"):
            transform(np.zeros((2, 1, 8, 8)), 0)


def test_batch_errors():
    with pytest.raises(DtypeError, match=r"RandomAffine\(degrees=\(-10.0, 10.0\)\): expected a "
                                         r"floating-point batch, received dtype uint8"):
        RandomAffine(10)(np.zeros((2, 1, 8, 8), np.uint8), rng())
    with pytest.raises(ShapeError, match=r"RandomCrop\(size=\(9, 9\).*: expected images of at "
                                         r"least 9x9 after padding, received 8x8"):
        RandomCrop(9)(np.zeros((2, 1, 8, 8)), rng())
    with pytest.raises(ShapeError, match=r"expected reflect padding smaller than the image"):
        RandomCrop(8, padding=8, padding_mode="reflect")(np.zeros((2, 1, 8, 8)), rng())
    with pytest.raises(ShapeError, match=r"Normalize\(.*\): expected mean with 1 or 1 values "
                                         r"\(the batch's channels\), received 3"):
        Normalize((0.1, 0.2, 0.3), (1, 1, 1))(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ShapeError, match=r"RandomAffine\(.*\): expected fill with 1 or 2 values"):
        RandomAffine(10, fill=(1, 2, 3))(np.zeros((2, 2, 8, 8)), rng())
    with pytest.raises(ArgumentError, match=r"affine: expected scale > 0, received scale=-1"):
        affine(np.zeros((1, 1, 4, 4)), 0, (0, 0), -1, 0)
    with pytest.raises(ShapeError, match=r"affine: expected per-image parameters for the 2 images "
                                         r"of the batch, received 3"):
        affine(np.zeros((2, 1, 4, 4)), np.zeros(3), (0, 0), 1, 0)


# ---------------------------------------------------------------------------------------------
# from_config


def test_from_config_builds_the_same_pipeline_as_the_constructors():
    config = [  # as tomllib reads [[augment]] tables: lists, not tuples
        {"name": "RandomCrop", "size": 28, "padding": 2},
        {"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]},
        {"name": "RandomErasing", "p": 0.5, "value": 0},
        {"name": "Normalize", "mean": [0.1307], "std": [0.3081]},
    ]
    built = from_config(config)
    direct = Compose([
        RandomCrop(28, padding=2),
        RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        RandomErasing(p=0.5),
        Normalize(0.1307, 0.3081),
    ])
    assert repr(built) == repr(direct)
    batch = rng(30).random((16, 1, 28, 28), dtype=np.float32)
    assert built(batch, rng(1)).tobytes() == direct(batch, rng(1)).tobytes()
    assert from_config([]).transforms == []


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "RandomAffine"}, r"spec.toml: augment: expected a list of tables with a 'name' "
                                   r"each, received dict"),
        ([{"degrees": 3}], r"augment\[0\]: expected a table with a 'name' key, received "
                           r"\{'degrees': 3\}"),
        ([{"name": "RandomFlip"}], r"augment\[0\]: unknown transform name='RandomFlip'; expected "
                                   r"one of \['Normalize', 'RandomAffine', 'RandomCrop', "),
        ([{"name": "RandomErasing"}, {"name": "RandomAffine", "degree": 3}],
         r"augment\[1\]: RandomAffine has no argument 'degree'; expected keys among "
         r"\['degrees', 'translate'"),
        ([{"name": "RandomAffine"}], r"augment\[0\]: RandomAffine needs the key 'degrees'"),
        ([{"name": "RandomAffine", "degrees": -3}],
         r"augment\[0\]: RandomAffine: expected degrees >= 0 when given as a single number"),
    ],
)
def test_from_config_errors_name_the_item(config, message):
    with pytest.raises(ArgumentError, match=message):
        from_config(config, where="spec.toml: augment")
