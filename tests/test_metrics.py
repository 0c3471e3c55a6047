"""Metrics: torch-fidelity's numbers against independent numpy/scipy computations on the same features."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import scipy.linalg
import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from bench import BenchError, data
from bench.io import atomic_torch_save
from bench.metrics import (DOMAIN_EXTRACTOR, INCEPTION_FILE, DomainFeatureExtractor, MetricsConfig, Scorer,
                           inception_weights_path, protocol_id, to_uint8)
from bench.config import TrialConfig
from bench.trial import run_trial


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def scorer(digits):
    return Scorer(MetricsConfig(num_samples=360), digits, torch.device("cpu"))


def features_of(scorer, images, layer="features"):
    extractor = DomainFeatureExtractor(DOMAIN_EXTRACTOR, [layer], feature_extractor_weights_path=str(scorer.weights_path))
    extractor.eval()
    with torch.no_grad():
        (features,) = extractor(images.expand(-1, 3, -1, -1))
    return features.double().numpy()


def scipy_fid(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def numpy_kid_full_set(a, b):
    """Unbiased MMD² with the cubic polynomial kernel on the whole sets (KID when the subset is everything), in float64;
    also the float32 rounding error torch-fidelity's computation of it may have, and the biased MMD² (what a kernel
    sum that kept the diagonal would give)."""
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y.T / d + 1) ** 3
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    unbiased = float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    biased = float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    # torch-fidelity sums the kernels in float32: each kernel value carries a relative error up to about d·eps (a
    # d-term dot product, cubed), so the MMD², a difference of means of such values, is off by up to d·eps times the
    # size of those means. A bound from the arithmetic rather than a relative tolerance that held on one machine.
    rounding = d * float(np.finfo(np.float32).eps) * float(np.abs(kxx).mean() + np.abs(kyy).mean() + 2 * np.abs(kxy).mean())
    return unbiased, rounding, biased


def numpy_inception_score(logits, splits=10, seed=2020):
    logits = logits[np.random.RandomState(seed).permutation(len(logits))]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    n = len(p)
    for chunk in (p[i * n // splits: (i + 1) * n // splits] for i in range(splits)):
        q = chunk.mean(0, keepdims=True)
        scores.append(np.exp((chunk * (np.log(chunk) - np.log(q))).sum(1).mean()))
    return float(np.mean(scores))


def test_domain_extractor_is_accurate_and_recorded(scorer):
    info = json.loads(scorer.weights_path.with_suffix(".json").read_text())
    assert info["test_accuracy"] > 0.9
    assert scorer.extractor_accuracy == info["test_accuracy"]
    assert scorer.extractor_id.startswith("domain-digits-1x16x16-")


def test_fid_kid_is_match_independent_computation(scorer, digits):
    fake = digits.train[:360]
    ours = scorer.score_images(fake)
    a, b = features_of(scorer, fake), features_of(scorer, digits.test)
    reference = scipy_fid(a, b)
    assert reference > 0.05  # different images: a non-trivial distance
    assert abs(ours["fid"] - reference) / reference < 1e-4
    # 360 vs 360 images: KID's one "subset" size is the whole set, so it equals the full-set MMD².
    kid, rounding, biased = numpy_kid_full_set(a, b)
    assert abs(biased - kid) > 10 * rounding  # the bound still tells the unbiased estimate from the biased one
    assert ours["kid"] == pytest.approx(kid, abs=rounding)
    logits = features_of(scorer, fake, "logits_unbiased")
    assert ours["isc"] == pytest.approx(numpy_inception_score(logits), rel=1e-5)


def test_features_follow_requested_order(scorer, digits):
    images = digits.test[:8].expand(-1, 3, -1, -1)
    both = DomainFeatureExtractor(DOMAIN_EXTRACTOR, ["logits_unbiased", "features"],
                                  feature_extractor_weights_path=str(scorer.weights_path)).eval()
    logits, features = both(images)
    assert logits.shape == (8, 10) and features.shape == (8, 64)


def test_fid_of_a_set_with_itself_is_zero(scorer, digits):
    assert abs(scorer.score_images(digits.test)["fid"]) < 1e-3


def test_real_statistics_are_cached(scorer, digits, bench_cache):
    scorer.score_images(digits.train[:360])
    cached = list((bench_cache / "fidelity").glob(f"{scorer.real_cache_name}*"))
    assert any("stat-fid" in p.name for p in cached)


def test_generated_samples_use_a_fixed_latent(scorer):
    G = nn.Sequential(nn.Linear(64, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))
    sample = lambda n, g: G(torch.rand(n, 64, generator=g))
    first, second = scorer.sample_images(sample), scorer.sample_images(sample)
    assert first.dtype == torch.uint8 and first.shape == (360, 1, 16, 16)
    assert torch.equal(first, second)


def test_to_uint8_rounds_like_an_8bit_png():
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1])).tolist() == [0, 128, 255, 255, 0]


def test_trained_generator_scores_clearly_better_than_untrained(tmp_path):
    config = TrialConfig(dataset="digits", loss="ns_gan", steps=600, eval_steps=[1, 600],
                         lr=1e-3, metrics={"num_samples": 500})
    result = run_trial(config, tmp_path)
    untrained, trained = result.rows[0]["fid"], result.rows[1]["fid"]
    assert trained < 0.5 * untrained, (untrained, trained)


def test_inception_needs_a_weights_file(digits, tmp_path):
    with pytest.raises(BenchError, match="inception_weights.*not found.*gan-bench prefetch"):
        Scorer(MetricsConfig(extractor="inception", inception_weights=tmp_path / "missing.pth"), digits,
               torch.device("cpu"))


def test_inception_weights_default_to_where_prefetch_puts_them(bench_cache):
    assert inception_weights_path(MetricsConfig()) == bench_cache / "weights" / INCEPTION_FILE
    assert inception_weights_path(MetricsConfig(inception_weights="/x/w.pth")) == Path("/x/w.pth")


def test_inception_fid_and_is_match_independent_computations(digits, inception_weights):
    small = data.Dataset("digits", digits.train[:12], digits.test[:12], digits.train_labels[:12],
                         digits.test_labels[:12], 10, digits.resize)
    scorer = Scorer(MetricsConfig(extractor="inception", inception_weights=inception_weights, num_samples=12,
                                  kid=False, isc=True), small, torch.device("cpu"))
    assert scorer.extractor_id == "inception-v3-compat"
    fake = small.train
    metrics = scorer.score_images(fake)
    # The same network, loaded from the same file, on the same grayscale images tiled to 3 channels.
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(inception_weights))
    net.eval()
    with torch.no_grad():
        fake_features, fake_logits = (t.double().numpy() for t in net(fake.expand(-1, 3, -1, -1)))
        real_features, _ = (t.double().numpy() for t in net(small.test.expand(-1, 3, -1, -1)))
    assert fake_features.std() > 0.05  # the features do not vanish, so the comparison means something
    assert metrics["fid"] == pytest.approx(scipy_fid(fake_features, real_features), rel=1e-4)
    assert metrics["isc"] == pytest.approx(numpy_inception_score(fake_logits), rel=1e-4)


def sha256_12(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def test_num_real_scores_against_the_first_n_test_images(digits):
    scorer = Scorer(MetricsConfig(num_samples=200, num_real=200, kid=False, isc=False), digits, torch.device("cpu"))
    fake = digits.train[:200]
    ours = scorer.score_images(fake)["fid"]
    fake_features = features_of(scorer, fake)
    reference = scipy_fid(fake_features, features_of(scorer, digits.test[:200]))
    assert abs(ours - reference) / reference < 1e-4
    # Neither the whole split nor another 200 would give it.
    for other in (digits.test, digits.test[-200:]):
        assert abs(scipy_fid(fake_features, features_of(scorer, other)) - reference) / reference > 1e-2
    assert scorer.protocol["real_count"] == 200
    assert "-test-200-" in scorer.real_cache_name
    whole = Scorer(MetricsConfig(num_samples=200), digits, torch.device("cpu"))
    assert whole.protocol["real_count"] == 360 and "-test-360-" in whole.real_cache_name


def test_num_real_beyond_the_test_split_is_one_line(digits):
    with pytest.raises(BenchError) as info:
        Scorer(MetricsConfig(num_real=361), digits, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message and "metrics.num_real" in message and "361" in message and "360" in message
    with pytest.raises(pydantic.ValidationError, match="num_real"):
        MetricsConfig(num_real=9)


def test_protocol_names_everything_a_fid_depends_on(scorer):
    weights = sha256_12(scorer.weights_path)
    assert scorer.protocol == {"extractor": scorer.extractor_id, "extractor_weights": weights, "resize": "antialias",
                               "real_split": "test", "real_count": 360, "gen_count": 360}
    assert protocol_id(scorer.protocol) == f"{scorer.extractor_id}@{weights} resize=antialias real=test:360 gen=360"
    assert weights in scorer.real_cache_name


def test_inception_protocol_hashes_the_weights_file(digits, inception_weights, tmp_path):
    config = MetricsConfig(extractor="inception", inception_weights=inception_weights, num_samples=50, num_real=20)
    scorer = Scorer(config, digits, torch.device("cpu"))
    assert scorer.protocol == {"extractor": "inception-v3-compat", "extractor_weights": sha256_12(inception_weights),
                               "resize": "antialias", "real_split": "test", "real_count": 20, "gen_count": 50}
    state = torch.load(inception_weights, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1e-3
    changed = tmp_path / "changed.pth"
    torch.save(state, changed)
    other = Scorer(config.model_copy(update={"inception_weights": changed}), digits, torch.device("cpu"))
    assert other.protocol["extractor_weights"] == sha256_12(changed) != scorer.protocol["extractor_weights"]
    assert other.real_cache_name != scorer.real_cache_name  # the other weights' features are not reused


def test_domain_extractor_files_are_reproducible(tmp_path):
    # The weights hash is of the file: equal weights must give equal files, whatever the path written to.
    checkpoint = {"state_dict": {"w": torch.arange(6.0)}, "id": "x"}
    atomic_torch_save(checkpoint, tmp_path / "a.pt")
    atomic_torch_save(checkpoint, tmp_path / "b" / "other-name.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "other-name.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]["w"], torch.arange(6.0))


def test_protocol_ids_tell_protocols_apart():
    base = {"extractor": "inception-v3-compat", "extractor_weights": "1a2b3c4d5e6f", "resize": "tf1_bilinear",
            "real_split": "test", "real_count": 10000, "gen_count": 10000}
    assert protocol_id(base) == "inception-v3-compat@1a2b3c4d5e6f resize=tf1_bilinear real=test:10000 gen=10000"
    changes = {"extractor": "domain-celeba", "extractor_weights": "ffffffffffff", "resize": "antialias",
               "real_split": "train", "real_count": 19962, "gen_count": 5000}
    ids = [protocol_id(base)] + [protocol_id({**base, key: value}) for key, value in changes.items()]
    assert len(set(ids)) == len(ids)
    assert protocol_id({"extractor": "inception-v3-compat"}) == "inception-v3-compat"  # recorded before protocols


def test_kid_subsets_reach_torch_fidelity(digits):
    fake = digits.train[:400]  # more fakes than reals: each KID subset draws different fakes
    one = Scorer(MetricsConfig(kid_subsets=1), digits, torch.device("cpu")).score_images(fake)
    many = Scorer(MetricsConfig(kid_subsets=20), digits, torch.device("cpu")).score_images(fake)
    assert one["kid_std"] == 0.0 and many["kid_std"] > 0.0
