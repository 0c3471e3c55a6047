"""triangles and squares (bench.data.convex): the authors' notebook, ported below as the reference, gives the same
pixels; v1's file layout and splits; the corrected generator; the renderer on shapes of known area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import path
from scipy import ndimage

from bench import BenchError, data
from bench.data import convex
from bench.metrics import MetricsConfig, Scorer


# The notebook colabs/Convex_Polygons_Dataset.ipynb of google/compare_gan (master), its code cell as it is, but for
# `record` (which keeps the draws) and scipy.ndimage.convolve for its deprecated alias filters.convolve.
def GenerateConvexPolygon(n_vertices, min_segment_angle, scale, raster_dim, subpixel_res, shift_to_mean=False,
                          record=None):  # noqa: N802 (the notebook's names)
    segment_angle = 360.0 / n_vertices
    max_angle = segment_angle - min_segment_angle / 2.0
    grid_length = raster_dim * scale
    angles = []
    for i in range(n_vertices):
        offset_angle = np.random.rand() * max_angle
        angles.append(i * segment_angle + min_segment_angle / 2.0 + offset_angle)
    angles_in_radians = np.array(angles) * np.pi / 180.0
    x = np.column_stack((np.cos(angles_in_radians), np.sin(angles_in_radians)))
    x = (x + 1.0) / 2.0
    theta = np.radians(np.random.rand() * 2 * np.pi)
    record.append((angles_in_radians, theta))
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.matrix([[cos, -sin], [sin, cos]])
    x = np.dot(x, rot)
    vertices = x * grid_length
    if shift_to_mean:
        vertices += raster_dim / 2.0 - vertices.mean(axis=0)
    return notebook_raster(np.asarray(vertices), subpixel_res, raster_dim)


def notebook_raster(vertices, r, dim):
    poly_as_path = path.Path(vertices * r)
    grid_x, grid_y = np.mgrid[0 : dim * r, 0 : dim * r]
    flattened_grid = np.column_stack((grid_x.ravel(), grid_y.ravel()))
    mask = poly_as_path.contains_points(flattened_grid).reshape(dim * r, dim * r)
    mask = np.array(~mask, dtype=np.float32)
    mask = ndimage.convolve(mask, np.ones((r, r)), mode="constant", cval=1.0)
    return mask[::r, ::r] / (r * r)


def GenerateDataset(n_instances, n_vertices, min_segment_angle, scale, raster_dim, subpixel_res, shift_to_mean,
                    seed=0, record=None):  # noqa: N802
    np.random.seed(seed)
    x = np.zeros((n_instances, raster_dim, raster_dim))
    y = np.ones(n_instances, dtype=np.int8) * n_vertices
    for i in range(n_instances):
        x[i] = GenerateConvexPolygon(n_vertices=n_vertices, min_segment_angle=min_segment_angle, scale=scale,
                                     raster_dim=raster_dim, subpixel_res=subpixel_res, shift_to_mean=shift_to_mean,
                                     record=record)
    ids = np.random.permutation(x.shape[0])
    return x[ids], y[ids]


# Measured by running that code (GenerateDataset(5000, k, 20, 0.75, 28, 8, True, seed=0)): the mean pixel and the
# share of partial (anti-aliased, 0 < p < 1) pixels; per image their standard deviations are 0.036 / 0.028 and
# 0.0066 / 0.0057 (triangles / squares).
NOTEBOOK_STATS = {3: (0.8674, 0.0699), 4: (0.7622, 0.0752)}
RADIUS = convex.SCALE * convex.SIZE / 2  # 10.5 px


@pytest.fixture(autouse=True)
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root of its own, and v1's splits shrunk to 60 / 10 / 10 images, so that a whole file takes
    milliseconds."""
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GAN_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(convex, "TRAIN_COUNT", 60)
    monkeypatch.setattr(convex, "TEST_COUNT", 10)
    monkeypatch.setattr(convex, "HOLDOUT_COUNT", 10)
    return tmp_path / "data"


def _gaps_and_radii(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles (degrees) between consecutive vertices seen from the circle through them, and their distances from
    its centre: found from the vertices alone (the circumcentre of the first three)."""
    a, b, c = (vertices[:, i] for i in range(3))
    d = 2 * (a[:, 0] * (b[:, 1] - c[:, 1]) + b[:, 0] * (c[:, 1] - a[:, 1]) + c[:, 0] * (a[:, 1] - b[:, 1]))
    sq = [(p**2).sum(axis=1) for p in (a, b, c)]
    ux = (sq[0] * (b[:, 1] - c[:, 1]) + sq[1] * (c[:, 1] - a[:, 1]) + sq[2] * (a[:, 1] - b[:, 1])) / d
    uy = (sq[0] * (c[:, 0] - b[:, 0]) + sq[1] * (a[:, 0] - c[:, 0]) + sq[2] * (b[:, 0] - a[:, 0])) / d
    offsets = vertices - np.stack([ux, uy], axis=-1)[:, None, :]
    angles = np.sort(np.degrees(np.arctan2(offsets[..., 1], offsets[..., 0])), axis=1)
    gaps = np.diff(np.concatenate([angles, angles[:, :1] + 360], axis=1), axis=1)
    return gaps, np.hypot(offsets[..., 0], offsets[..., 1])


# the notebook


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the notebook's np.matrix
@pytest.mark.parametrize("n_vertices, seed", [(3, 0), (4, 0), (3, 7)])
def test_same_draws_and_pixels_as_the_notebook_code(n_vertices: int, seed: int) -> None:
    record: list = []
    x, y = GenerateDataset(150, n_vertices, 20, 0.75, 28, 8, True, seed=seed, record=record)
    ours_x, ours_y = convex.generate(n_vertices, seed=seed, count=150)
    assert ours_x.shape == (150, 28, 28, 1) and ours_x.dtype == np.float32
    np.testing.assert_array_equal(ours_x[..., 0], x)  # bit for bit, the final shuffle included
    np.testing.assert_array_equal(ours_y, y)
    polygons = convex.draw(150, n_vertices, np.random.RandomState(seed))
    np.testing.assert_array_equal(polygons.angles, np.array([angles for angles, _ in record]))
    np.testing.assert_array_equal(polygons.rotation, np.array([theta for _, theta in record]))


@pytest.mark.parametrize("n_vertices", [3, 4])
def test_statistics_match_those_of_the_notebook(n_vertices: int) -> None:
    """On other draws (seed 1) than those measured: within ~5 standard errors."""
    x, _ = convex.generate(n_vertices, seed=1, count=2000)
    mean, partial = NOTEBOOK_STATS[n_vertices]
    assert x.mean() == pytest.approx(mean, abs=0.005)
    assert ((x > 0) & (x < 1)).mean() == pytest.approx(partial, abs=0.001)
    assert np.all(x * 64 == np.round(x * 64))  # 8×8 sub-samples: multiples of 1/64


@pytest.mark.parametrize("n_vertices", [3, 4])
def test_notebook_generator_does_what_its_code_does(n_vertices: int) -> None:
    """A circle of radius 10.5 px, gaps from 10° (not 20°), rotations up to 2π degrees, the vertex mean centred."""
    polygons = convex.draw(2000, n_vertices, np.random.RandomState(1))
    vertices = polygons.vertices()
    gaps, radii = _gaps_and_radii(vertices)
    np.testing.assert_allclose(radii, RADIUS)
    assert 10 <= gaps.min() < 15
    assert 0 <= polygons.rotation.min() and 0.1 < polygons.rotation.max() <= np.radians(2 * np.pi)
    np.testing.assert_allclose(vertices.mean(axis=1), 14.0)


@pytest.mark.parametrize("n_vertices", [3, 4])
def test_corrected_generator_does_what_the_text_says(n_vertices: int) -> None:
    polygons = convex.draw(2000, n_vertices, np.random.RandomState(1), "corrected")
    vertices = polygons.vertices()
    gaps, radii = _gaps_and_radii(vertices)
    np.testing.assert_allclose(radii, RADIUS)
    assert 20 <= gaps.min() < 25
    assert polygons.rotation.min() < 0.1 and polygons.rotation.max() > 2 * np.pi - 0.1
    assert np.histogram(polygons.rotation, bins=4, range=(0, 2 * np.pi))[0].min() > 400  # spread over [0, 2π)
    # The area centroid (of the rendered pixels too) at the image centre.
    np.testing.assert_allclose(convex._centroid(vertices), 14.0)
    ink = 1.0 - convex.render(vertices[:50])
    rows = (ink * np.arange(28)[:, None]).sum(axis=(1, 2)) / ink.sum(axis=(1, 2))
    np.testing.assert_allclose(rows, 14.0 - 1 / 16, atol=0.05)  # pixel i's sub-samples centre on i + 1/16


# the renderer


def test_render_draws_a_square_where_its_vertices_are() -> None:
    """Rows 7.03 … 17.03 (the first coordinate), columns 5.03 … 15.03: 80 × 80 sub-samples, 100 px² exactly."""
    square = np.array([[[7.03, 5.03], [17.03, 5.03], [17.03, 15.03], [7.03, 15.03]]])
    image = convex.render(square)[0]
    assert (1 - image).sum() == 100.0
    # Pixel i averages the sub-samples at i − 3/8 … i + 4/8: those of rows 8 … 16, columns 6 … 14 are all inside.
    assert (image[8:17, 6:15] == 0).all() and image[:, :5].min() == 1 and image[:6].min() == 1
    assert ((image > 0) & (image < 1)).sum() == 9 * 2 + 9 * 2 + 4
    np.testing.assert_array_equal(image, notebook_raster(square[0], 8, 28))


def test_render_triangles_match_their_area_and_the_notebook() -> None:
    triangle = np.array([[[4.03, 4.03], [20.03, 4.03], [4.03, 24.03]]])  # 160 px²
    image = convex.render(triangle)[0]
    assert (1 - image).sum() == pytest.approx(160, abs=1.5)
    np.testing.assert_array_equal(image, notebook_raster(triangle[0], 8, 28))
    clockwise = convex.render(triangle[:, ::-1])
    np.testing.assert_array_equal(clockwise[0], image)
    # Shapes that leave the grid (negative coordinates included) as the notebook clips them.
    shifted = triangle - 6.0
    np.testing.assert_array_equal(convex.render(shifted)[0], notebook_raster(shifted[0], 8, 28))


def test_render_refuses_bad_vertices_in_one_line() -> None:
    with pytest.raises(BenchError, match=r"^render: vertices must be finite, of shape \(N, k, 2\)"):
        convex.render(np.zeros((2, 2, 2)))
    with pytest.raises(BenchError, match="finite"):
        convex.render(np.full((1, 3, 2), np.nan))


# v1's layout


def _authors_file(root: Path, name: str, shape: tuple[int, ...]) -> Path:
    """A file in v1's layout whose image i is uniformly i/100: where each lands shows the splits."""
    x = np.broadcast_to((np.arange(80) / 100.0).reshape(80, *[1] * (len(shape) - 1)), shape).copy()
    file = root / "convex" / f"{name}.npz"
    file.parent.mkdir(parents=True)
    np.savez(file, x=x, y=np.full(80, 3, dtype=np.int64))
    return file


@pytest.mark.parametrize("shape", [(80, 28, 28, 1), (80, 28, 28)])
def test_a_file_in_v1_layout_is_read_as_it_is_with_v1_splits(roots: Path, shape: tuple[int, ...]) -> None:
    file = _authors_file(roots, "triangles", shape)
    before = file.read_bytes()
    dataset = data.load("triangles")
    level = np.round(np.arange(80) / 100.0 * 255).astype(np.uint8)
    assert dataset.train.shape == (60, 1, 28, 28) and dataset.train.dtype == torch.uint8
    assert (dataset.train[:, 0, 0, 0].numpy() == level[:60]).all()
    assert (dataset.test[:, 0, 0, 0].numpy() == level[60:70]).all()  # v1's test: [-20000:-10000]
    assert (convex.holdout("triangles")[:, 0, 0, 0].numpy() == level[70:]).all()
    assert dataset.num_classes == 1 and (dataset.train_labels == 0).all() and dataset.resize == "none"
    assert file.read_bytes() == before
    assert data.load("triangles", 16).train.shape == (60, 1, 16, 16)


def test_a_missing_file_is_generated_once_and_a_replaced_one_rebuilds_the_cache(roots: Path) -> None:
    dataset = data.load("squares")
    file = roots / "convex" / "squares.npz"
    with np.load(file) as arrays:
        x, y = arrays["x"], arrays["y"]
    expected_x, expected_y = convex.generate(4, count=80)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    pixels = np.round(expected_x * 255).astype(np.uint8).transpose(0, 3, 1, 2)
    assert torch.equal(dataset.train, torch.from_numpy(pixels[:60]))
    assert torch.equal(dataset.test, torch.from_numpy(pixels[60:70]))
    # White background, black shape, as v1 feeds them: the corners are 255.
    assert (dataset.train[:, 0, 0, 0] == 255).all()
    stamp = file.stat().st_mtime_ns
    data.load("squares")
    assert file.stat().st_mtime_ns == stamp
    file.unlink()
    np.savez(file, x=np.zeros((80, 28, 28, 1)), y=y)  # the user's own file, another size and time
    assert (data.load("squares").train == 0).all()


def test_corrected_files_sit_beside_v1s(roots: Path) -> None:
    corrected = data.load("triangles", generator="corrected")
    assert (roots / "convex" / "triangles-corrected.npz").is_file()
    assert not (roots / "convex" / "triangles.npz").exists()
    assert not torch.equal(corrected.train, data.load("triangles").train)


def test_prefetch_writes_the_file(roots: Path) -> None:
    from bench import prefetch

    lines: list[str] = []
    prefetch.fetch(["triangles"], {}, None, False, [], lines.append)
    assert (roots / "convex" / "triangles.npz").is_file()
    assert "no class labels" in lines[-1]


# errors


@pytest.mark.parametrize("arrays, problem", [
    ({"images": np.zeros((80, 28, 28, 1))}, r"holds \['images'\], not v1's arrays x \(images\) and y"),
    ({"x": np.zeros((79, 28, 28, 1)), "y": np.zeros(79)}, r"x has shape \(79, 28, 28, 1\); v1 expects 80 images"),
    ({"x": np.zeros((80, 28, 28, 1)), "y": np.zeros(3)}, "y has 3 labels for 80 images"),
    ({"x": np.zeros((80, 28, 28, 1), np.uint8), "y": np.zeros(80)}, "x must be floats in \\[0, 1\\] as v1 feeds"),
    ({"x": np.full((80, 28, 28, 1), 255.0), "y": np.zeros(80)}, "x must be floats in \\[0, 1\\]"),
])
def test_a_bad_file_is_refused_in_one_line_naming_it(roots: Path, arrays: dict, problem: str) -> None:
    file = roots / "convex" / "triangles.npz"
    file.parent.mkdir(parents=True)
    np.savez(file, **arrays)
    with pytest.raises(data.DatasetMissingError, match=f"^dataset 'triangles': {file}: {problem}") as info:
        data.load("triangles")
    assert "\n" not in str(info.value)


def test_a_damaged_file_is_refused_in_one_line(roots: Path) -> None:
    file = roots / "convex" / "squares.npz"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(data.DatasetMissingError, match=f"^dataset 'squares': {file}: not a readable .npz"):
        data.load("squares")


def test_bad_generator_and_the_domain_extractor_are_refused_in_one_line() -> None:
    with pytest.raises(BenchError, match="^option generator of dataset 'squares' must be notebook or corrected, got"):
        data.load("squares", generator="x")
    with pytest.raises(BenchError, match="^draw: generator must be notebook or corrected, got 'text'$"):
        convex.draw(1, 3, np.random.RandomState(0), "text")
    with pytest.raises(BenchError, match="^metrics.extractor: dataset triangles has no class labels") as info:
        Scorer(MetricsConfig(), data.load("triangles"), torch.device("cpu"))
    assert "\n" not in str(info.value)
