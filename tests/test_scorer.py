"""The Scorer built once per worker: its feature extractor and the real features are made or read at its first
evaluation and kept, and its numbers stay those of the one torch_fidelity.calculate_metrics call per evaluation it made
before, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch_fidelity
from torch import nn

from bench import data, metrics
from bench.io import cache_dir
from bench.metrics import MetricsConfig, Scorer

NAMES = {"inception_score_mean": "isc", "inception_score_std": "isc_std", "frechet_inception_distance": "fid",
         "kernel_inception_distance_mean": "kid", "kernel_inception_distance_std": "kid_std",
         "precision": "precision", "recall": "recall", "f_score": "f_score"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def calculate_metrics(scorer: Scorer, images: torch.Tensor) -> dict[str, float]:
    """What the Scorer computed before it kept its extractor: a fresh calculate_metrics call, configured as it was."""
    config = scorer.config
    scores = torch_fidelity.calculate_metrics(
        input1=metrics._Images(images), input2=scorer.real, input2_cache_name=scorer.real_cache_name,
        cache_root=str(cache_dir() / "fidelity"), feature_extractor=scorer.extractor_name,
        feature_extractor_weights_path=str(scorer.weights_path), cuda=False, fid=True, kid=config.kid,
        isc=config.isc, prc=config.prc, kid_subset_size=min(1000, len(images), len(scorer.real)),
        kid_subsets=config.kid_subsets, batch_size=64, save_cpu_ram=True, verbose=False)
    return {NAMES[k]: float(v) for k, v in scores.items()}


def assert_bit_identical(ours: dict[str, float], reference: dict[str, float]) -> None:
    assert list(ours.items()) == list(reference.items())  # == on floats, in the same order


@pytest.mark.parametrize("options, names", [
    ({"kid": False, "isc": False}, ["fid"]),  # FID alone: calculate_metrics' shortcut through the cached statistics
    ({}, ["isc", "isc_std", "fid", "kid", "kid_std"]),
    ({"prc": True, "kid_subsets": 20}, ["isc", "isc_std", "fid", "kid", "kid_std", "precision", "recall", "f_score"]),
], ids=["fid", "fid-kid-isc", "prc"])
def test_domain_scores_equal_calculate_metrics_bit_for_bit(digits, options, names):
    scorer = Scorer(MetricsConfig(num_samples=200, num_real=300, **options), digits, CPU)
    # 203 images: batches of 64 and a last one of 11, as calculate_metrics made them.
    for images in (digits.train[:203], digits.train[1000:1200]):
        ours = scorer.score_images(images)
        assert list(ours) == names
        assert_bit_identical(ours, calculate_metrics(scorer, images))


def test_inception_scores_equal_calculate_metrics_bit_for_bit(digits, inception_weights):
    # Inception runs at 5-9 images/s on a CPU: 20 samples, 12 real images.
    small = data.Dataset("digits", digits.train[:20], digits.test[:12], digits.train_labels[:20],
                         digits.test_labels[:12], 10, digits.resize)
    config = MetricsConfig(extractor="inception", inception_weights=inception_weights, num_samples=20, num_real=12,
                           kid_subsets=5, prc=True)
    scorer = Scorer(config, small, CPU)
    ours = scorer.score_images(small.train)
    assert ours.keys() == {"isc", "isc_std", "fid", "kid", "kid_std", "precision", "recall", "f_score"}
    assert_bit_identical(ours, calculate_metrics(scorer, small.train))


def test_two_evaluations_make_the_extractor_and_read_the_cache_once(digits, monkeypatch):
    config = MetricsConfig(num_samples=100, num_real=250, kid_subsets=10)
    Scorer(config, digits, CPU).cache_real_features()  # the files on disk, as an earlier worker left them
    scorer = Scorer(config, digits, CPU)
    calls = {"create_feature_extractor": 0, "extract_featuresdict_from_input_id_cached": 0, "torch.load": 0}

    def counting(name, function):
        def count(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return count

    for name in ("create_feature_extractor", "extract_featuresdict_from_input_id_cached"):
        monkeypatch.setattr(metrics, name, counting(name, getattr(metrics, name)))
    monkeypatch.setattr(torch, "load", counting("torch.load", torch.load))
    G = nn.Sequential(nn.Linear(8, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))
    sample = lambda n, g: G(torch.rand(n, 8, generator=g))
    first = scorer.score(sample)
    assert calls["create_feature_extractor"] == calls["extract_featuresdict_from_input_id_cached"] == 1
    read = calls["torch.load"]
    assert read >= 4  # the extractor's weights, the real features of two layers (FID and KID's, IS's), FID's statistics
    second = scorer.score(sample)
    assert calls == {"create_feature_extractor": 1, "extract_featuresdict_from_input_id_cached": 1, "torch.load": read}
    assert second == first
    assert_bit_identical(first, calculate_metrics(scorer, scorer.sample_images(sample)))


def test_score_many_equals_score_images_per_set(digits):
    scorer = Scorer(MetricsConfig(num_samples=100, num_real=300, kid_subsets=10, prc=True), digits, CPU)
    sets = [digits.train[:100], digits.train[100:237], digits.test[:64], digits.train[1000:1010]]
    many = scorer.score_many(sets)
    assert len(many) == len(sets)
    for images, scores in zip(sets, many):
        assert_bit_identical(scores, scorer.score_images(images))
    assert len({scores["fid"] for scores in many}) == len(sets)


def test_a_cache_file_damaged_before_the_first_read_is_rebuilt_and_one_damaged_later_is_not_read(digits, capsys):
    config = MetricsConfig(num_samples=100, num_real=350, kid_subsets=10)
    images = digits.train[:100]
    expected = Scorer(config, digits, CPU).score_images(images)
    scorer = Scorer(config, digits, CPU)
    [features] = (cache_dir() / "fidelity").glob(f"{scorer.real_cache_name}-*-features-features.pt")
    features.write_bytes(b"garbage")
    capsys.readouterr()
    assert scorer.score_images(images) == expected
    err = capsys.readouterr().err
    assert f"{features}: damaged (" in err and "rebuilding it" in err
    assert features.with_name(features.name + ".damaged").read_bytes() == b"garbage"
    features.write_bytes(b"garbage")  # after this Scorer read it: the worker goes on with what it holds
    assert scorer.score_images(images) == expected
    assert capsys.readouterr().err == ""
