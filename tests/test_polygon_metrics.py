"""Precision, recall and F1 on convex polygons (bench.polygon_metrics), on constructed cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from bench import polygon_metrics as pm
from bench.data import convex

DELTA = pm.PrfProtocol().delta


def polygons(count: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    vertices = convex.draw(count, k, np.random.RandomState(seed)).vertices()
    return vertices, convex.render(vertices)


@pytest.mark.parametrize("k", [3, 4])
def test_the_fit_finds_polygons_with_known_vertices(k):
    vertices, images = polygons(100, k, seed=1)
    fitted, distance = pm.fit(images, k)
    # Measured on 300 of each: mean 0.006-0.008, largest 0.042 (a pattern search can stop in a local minimum).
    assert distance.mean() < 0.012 and distance.max() < pm.FIT_SLACK
    # Each true vertex has a fitted one within a fraction of a pixel.
    nearest = np.linalg.norm(vertices[:, :, None] - fitted[:, None], axis=-1).min(axis=2)
    assert np.median(nearest) < 0.25
    assert distance.max() < DELTA  # every polygon of the data is on the manifold


def test_the_distance_is_rms_of_pixel_differences():
    a, b = np.zeros((1, 4, 4)), np.zeros((1, 4, 4))
    b[0, 0, :2] = 1.0  # 2 of 16 pixels differ by 1
    assert pm.distances(a, b)[0] == pytest.approx(np.sqrt(2 / 16))


def test_test_polygons_scored_as_samples_have_precision_one():
    _, images = polygons(100, 3, seed=2)
    value, _ = pm.precision(images, 3, DELTA)
    assert value == 1.0


def test_noise_has_precision_zero():
    noise = np.random.RandomState(0).rand(50, 28, 28).astype(np.float32)
    assert pm.precision(noise, 3, DELTA)[0] == 0.0


def test_delta_separates_a_slight_blur_from_a_one_pixel_miss():
    _, images = polygons(50, 3, seed=3)
    blurred = np.stack([gaussian_filter(image, 0.5) for image in images])
    assert pm.precision(blurred, 3, DELTA)[0] == 1.0
    shifted = np.roll(images, 1, axis=2)  # the same polygon one pixel to the side: another point of the manifold
    assert (pm.distances(shifted, images) > DELTA).mean() > 0.95


def test_a_generator_of_one_polygon_has_precision_one_and_recall_zero():
    _, images = polygons(41, 3, seed=4)
    only = torch.from_numpy(images[0])[None, None]

    def generate(z):  # whatever z, the same polygon (z still reaches the graph, as any G's would)
        return only.expand(len(z), -1, -1, -1) + 0 * z.sum(dim=1)[:, None, None, None]

    samples = generate(torch.zeros(20, 8)).squeeze(1).numpy()
    holdout = torch.from_numpy(images[1:])[:, None]
    reach = pm.invert(generate, torch.rand(40 * 2, 8) * 2 - 1, holdout, steps=5, lr=0.05, bounds=(-1, 1))
    result = pm.scores(samples, 3, reach, pm.PrfProtocol())
    assert result["precision"] == 1.0 and result["recall"] <= 0.05
    assert result["f1"] == pytest.approx(pm.f1(result["precision"], result["recall"]))


def test_inversion_finds_the_latent_of_a_generator_whose_inverse_is_known():
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 6) * 0.5, torch.randn(64) * 0.1

    def generate(z):
        return torch.sigmoid(z @ weight.T + bias).view(-1, 1, 8, 8)

    truth = torch.rand(30, 6) * 1.6 - 0.8  # inside the prior's support [-1, 1]
    targets = generate(truth)
    start = torch.rand(30 * 4, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reach = pm.invert(generate, start, targets, steps=300, lr=0.05, bounds=(-1, 1))
    assert reach.max() < 1e-3
    pattern = (torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    far = pm.invert(generate, start, pattern, steps=300, lr=0.05, bounds=(-1, 1))  # black and white: outside its range
    assert far.min() > DELTA


def test_f1_is_the_harmonic_mean():
    assert pm.f1(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    assert pm.f1(1.0, 0.0) == 0.0 and pm.f1(0.0, 0.0) == 0.0


def test_the_protocol_is_recorded_whole():
    record = pm.PrfProtocol(delta=0.2).record()
    assert record["prf_delta"] == 0.2 and {"prf_samples", "prf_inversions", "prf_restarts", "prf_steps", "prf_lr",
                                            "prf_seed", "prf_distance", "prf_fit"} <= record.keys()


@pytest.fixture
def small_polygons(tmp_path, monkeypatch):
    """A data root of its own, v1's splits shrunk so the set is made in milliseconds."""
    monkeypatch.setenv("GAN_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(convex, "TRAIN_COUNT", 200)
    monkeypatch.setattr(convex, "TEST_COUNT", 50)
    monkeypatch.setattr(convex, "HOLDOUT_COUNT", 40)


PRF = {"fid": False, "kid": False, "isc": False, "prf": True, "num_samples": 100, "prf_inversions": 10,
       "prf_restarts": 2, "prf_steps": 10}


def test_a_polygons_trial_records_precision_recall_f1_and_their_protocol(tmp_path, small_polygons):
    from bench.config import TrialConfig
    from bench.trial import run_trial

    config = TrialConfig(dataset="triangles", steps=20, eval_steps=[10, 20], metrics=PRF)
    result = run_trial(config, tmp_path / "with")
    assert [row["step"] for row in result.rows] == [10, 20]
    for row in result.rows:
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and "fid" not in row
        assert row["f1"] == pytest.approx(pm.f1(row["precision"], row["recall"]))
    assert result.protocol["extractor"] == "none" and result.protocol["prf_delta"] == DELTA
    assert result.protocol["prf_inversions"] == 10 and result.protocol["prf_samples"] == 100
    # Scoring reads G in eval mode and draws from its own generator: training goes on exactly as without it.
    without = run_trial(TrialConfig(dataset="triangles", steps=20, eval_steps=[10, 20], metrics={**PRF, "prf": False}),
                        tmp_path / "without")
    keep = ("step", "spread", "d_loss", "g_loss")
    assert [{k: r[k] for k in keep} for r in result.rows] == [{k: r[k] for k in keep} for r in without.rows]


@pytest.mark.parametrize("fields, message", [
    ({"dataset": "digits", "metrics": PRF}, "metrics.prf: precision, recall and F1 are measured on the convex polygon"),
    ({"dataset": "triangles", "metrics": {"fid": False}}, "kid, isc and prc are torch-fidelity's"),
    ({"dataset": "triangles", "metrics": {"prc": True, "prf": True}}, "prc and prf both make the columns"),
])
def test_prf_settings_that_cannot_work_are_refused(fields, message):
    from pydantic import ValidationError

    from bench.config import TrialConfig

    with pytest.raises(ValidationError, match=message):
        TrialConfig(**fields)


def test_a_study_may_optimise_f1_only_with_prf():
    from pydantic import ValidationError

    from bench.study import Study

    study = {"name": "p", "datasets": ["triangles"], "losses": ["ns_gan"], "objective": "f1",
             "budget": {"samples": 1, "steps": 10}, "metrics": PRF}
    assert Study.model_validate(study).objective == "f1"
    with pytest.raises(ValidationError, match="objective: f1 is computed only with metrics.prf: true"):
        Study.model_validate({**study, "metrics": {**PRF, "prf": False}})


def _polygon_results(values: dict[tuple[str, int], list[tuple[float, float, float]]]):
    """results.csv rows of a polygons study: (loss, trial) → [(precision, recall, f1) per evaluation]."""
    import pandas as pd

    rows = [{"stage": "search", "dataset": "triangles", "loss": loss, "trial": trial, "seed": 0, "step": 10 * (i + 1),
             "status": "completed", "protocol": "none real=test:50 gen=100", "precision": p, "recall": r, "f1": f}
            for (loss, trial), evaluations in values.items() for i, (p, r, f) in enumerate(evaluations)]
    return pd.DataFrame(rows)


def test_the_precision_recall_figure_shows_each_trial_at_its_best_f1(tmp_path):
    from bench.report import plot_precision_recall

    values = {("ns_gan", 0): [(0.9, 0.1, 0.18), (0.6, 0.5, 0.545)], ("ns_gan", 1): [(0.2, 0.3, 0.24)],
              ("vae", 0): [(0.1, 0.9, 0.18), (float("nan"), float("nan"), float("nan"))]}
    figure = plot_precision_recall(_polygon_results(values), tmp_path / "pr.png")
    points = {c.get_label(): c.get_offsets().tolist() for c in figure.axes[0].collections}
    # (recall, precision); the vae trial without a finite F1 at its second evaluation keeps its first.
    assert points == {"ns_gan (2 trials)": [[0.5, 0.6], [0.3, 0.2]], "vae (1 trials)": [[0.9, 0.1]]}
    assert (tmp_path / "pr.png").stat().st_size > 0
    values[("vae", 0)][0] = (0.4, 0.7, 0.509)  # other data, another figure
    figure = plot_precision_recall(_polygon_results(values), tmp_path / "pr.png")
    assert {c.get_label(): c.get_offsets().tolist() for c in figure.axes[0].collections}["vae (1 trials)"] == [[0.7, 0.4]]
