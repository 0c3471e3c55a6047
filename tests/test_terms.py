"""Loss terms and composite losses: each term against its formula on hand-computed inputs and for the direction of
its gradient, a composite as the weighted sum of its terms, D's features from the scoring pass (no second forward),
a searched weight end to end, and bad composites refused in one line."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from bench import cli, models, terms
from bench.models.common import Critic
from bench.config import TrialConfig
from bench.trial import run_trial


def context(**given) -> terms.Context:
    zeros = torch.zeros(2)
    fields = dict(real=torch.zeros(2, 1, 2, 2), fake=torch.zeros(2, 1, 2, 2), real_scores=zeros, fake_scores=zeros,
                  discriminator=nn.Identity(), rng=torch.Generator().manual_seed(0))
    return terms.Context(**{**fields, **given})


def test_feature_matching_is_the_squared_distance_of_the_feature_means_and_pulls_fakes_toward_reals():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)  # mean (1, 1)
    value = terms.feature_matching(context(real_features=real, fake_features=fake))
    assert value.item() == pytest.approx((2 - 1) ** 2 + (3 - 1) ** 2)
    value.backward()
    # d/d fake_i = -2 (mean_real - mean_fake) / n: minimising moves every fake feature toward the real mean.
    assert torch.allclose(fake.grad, torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))


def test_perceptual_compares_the_feature_means_of_a_fixed_network():
    double = lambda x: 2 * x  # a "network" whose features are easy to compute by hand
    real = torch.full((2, 1, 1, 2), 1.0)
    fake = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 3.0]]]], requires_grad=True)  # feature means (0, 4)
    value = terms.perceptual(context(real=real, fake=fake, feature_net=double))
    assert value.item() == pytest.approx(((2 - 0) ** 2 + (2 - 4) ** 2) / 2)
    value.backward()
    assert fake.grad[:, 0, 0, 0].lt(0).all() and fake.grad[:, 0, 0, 1].gt(0).all()  # toward the real features


def test_contrastive_pulls_reals_together_and_pushes_fakes_past_the_margin():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    fake = torch.tensor([[3.0, 1.0], [-1.0, 0.0]], requires_grad=True)  # f0 near r0's direction, f1 far from both
    value = terms.contrastive(context(real_features=real, fake_features=fake))
    unit = [(1.0, 0.0), (0.0, 1.0)], [(3 / math.sqrt(10), 1 / math.sqrt(10)), (-1.0, 0.0)]
    distance = lambda a, b: math.dist(a, b)
    pull = distance(*unit[0]) ** 2  # one real pair, counted both ways over 2 · 1 ordered pairs
    push = sum(max(0.0, 1 - distance(r, f)) ** 2 for r in unit[0] for f in unit[1]) / 4
    assert value.item() == pytest.approx(pull + push, abs=1e-6)
    value.backward()
    step = 0.1
    with torch.no_grad():
        real_after, fake_after = (real - step * real.grad), (fake - step * fake.grad)
        cosine = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        assert cosine(real_after[0], real_after[1]) > cosine(real[0], real[1])  # reals pulled together
        assert cosine(real[0], fake_after[0]) < cosine(real[0], fake[0])  # the close fake pushed away


def test_r1_is_the_squared_input_gradient_norm_of_d_on_real_data():
    D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False), nn.Flatten(0))
    with torch.no_grad():
        D[1].weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 2.0]]))
    value = terms.r1(context(real=torch.rand(3, 1, 2, 2), discriminator=D))
    assert value.item() == pytest.approx(1 + 4 + 0 + 4)  # ∇ₓD = w for every sample
    value.backward()
    assert D[1].weight.grad.equal(2 * D[1].weight.detach())  # minimising shrinks D's slope


def test_a_composite_loss_is_its_adversarial_loss_plus_the_weighted_terms():
    c = context(real_features=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
                fake_features=torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    total = terms.weighted_sum(["feature_matching", "contrastive"], {"w_feature_matching": 0.5, "w_contrastive": 3.0},
                               c)
    assert total.item() == pytest.approx(0.5 * terms.feature_matching(c).item() + 3 * terms.contrastive(c).item())
    assert terms.weighted_sum([], {}, c) == 0.0


def test_every_critic_gives_its_features_from_the_scoring_pass():
    for name in models.MODELS.names():
        _, D = models.build(name, (1, 16, 16), 8)
        assert isinstance(D, Critic)
        x = torch.rand(4, 1, 16, 16)
        D.eval()
        scores, features = D.scores_and_features(x)
        assert torch.equal(scores, D(x)) and features.shape[0] == 4 and features.dim() == 2


def count_d_passes(monkeypatch, config: TrialConfig, tmp_path) -> int:
    """Forward passes through D's output layer during a trial."""
    calls = []
    build = models.build

    def counting(*args, **kwargs):
        G, D = build(*args, **kwargs)
        D[-2].register_forward_hook(lambda *_: calls.append(1))
        return G, D

    monkeypatch.setattr(models, "build", counting)
    run_trial(config, tmp_path)
    return len(calls)


def test_feature_matching_adds_no_forward_pass_of_d(monkeypatch, tmp_path):
    base = dict(dataset="digits", steps=6, eval_steps=[6], n_disc=2, metrics={"num_samples": 50, "kid": False})
    plain = count_d_passes(monkeypatch, TrialConfig(**base), tmp_path / "plain")
    matched = count_d_passes(monkeypatch, TrialConfig(**base, terms=["feature_matching"]), tmp_path / "fm")
    assert plain == matched == 6 * (2 * 2 + 1)  # per step: n_disc D steps of a real and a fake pass, one G pass


def test_a_relativistic_g_loss_scores_the_real_batch_with_the_updated_d(monkeypatch, tmp_path):
    """Its G loss reads real scores: one more pass of D per G step, after D's update (not the D step's stale ones)."""
    base = dict(dataset="digits", steps=6, eval_steps=[6], n_disc=2, metrics={"num_samples": 50, "kid": False})
    assert count_d_passes(monkeypatch, TrialConfig(**base, loss="rsgan"), tmp_path) == 6 * (2 * 2 + 2)


def test_a_term_weight_is_a_hyperparameter_of_the_trial(tmp_path):
    config = TrialConfig(dataset="digits", steps=4, eval_steps=[4], terms=["feature_matching", "r1"],
                         loss_params={"w_r1": 0.5}, metrics={"num_samples": 50, "kid": False}).resolved()
    assert config.hyperparameters()["w_r1"] == 0.5 and config.hyperparameters()["w_feature_matching"] == 1.0


STUDY = {"name": "terms", "datasets": ["digits"],
         "losses": ["ns_gan", {"name": "ns_fm", "adversarial": "ns_gan", "g_terms": {"feature_matching": 1.0}},
                    {"name": "hinge_r1", "adversarial": "hinge", "d_terms": {"r1": 0.1}}],
         "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}},
         "loss_search_space": {"ns_fm": {"w_feature_matching": {"dist": "loguniform", "low": 0.01, "high": 100}}},
         "budget": {"samples": 2, "steps": 10, "eval_every": 10},
         "metrics": {"num_samples": 50, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 1}}


def test_a_searched_weight_reaches_results_csv(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "s.yaml"), "--results",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table["loss"]) == {"ns_gan", "ns_fm", "hinge_r1"}  # the composite's name is its loss downstream
    fm = table[table["loss"] == "ns_fm"].sort_values("trial")["param_w_feature_matching"].tolist()
    assert fm[0] == 1.0 and 0.01 <= fm[1] <= 100 and fm[1] != 1.0  # the default sample, then a searched one
    assert (table[table["loss"] == "hinge_r1"]["param_w_r1"] == 0.1).all()
    assert table[table["loss"] == "ns_gan"]["param_w_feature_matching"].isna().all()


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "adversarial": "ns_gan", "g_terms": {"sharpness": 1.0}},
     "s.yaml: composites.x.g_terms.sharpness: unknown loss term 'sharpness'; valid: feature_matching"),
    ({"name": "x", "adversarial": "ns_gan", "g_terms": {"feature_matching": -1.0}},
     "g_terms.feature_matching: a weight must be a finite number ≥ 0, got -1.0"),
    ({"name": "x", "adversarial": "began", "g_terms": {"feature_matching": 1.0}},
     "adversarial: began's discriminator is not a critic; loss terms need one"),
    ({"name": "x", "adversarial": "vae", "d_terms": {"r1": 1.0}},
     "adversarial: vae's discriminator is not a critic"),
    ({"name": "x", "adversarial": "ns_gan", "d_terms": {"feature_matching": 1.0}},
     "d_terms.feature_matching: a term of G's loss; put it in g_terms"),
    ({"name": "ns_gan", "adversarial": "ns_gan", "g_terms": {"feature_matching": 1.0}},
     "name: ns_gan is already a registered loss"),
])
def test_a_bad_composite_is_refused_in_one_line(tmp_path, capsys, entry, message):
    study = {**STUDY, "losses": ["ns_gan", entry], "loss_search_space": {}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert cli.main(["validate", str(tmp_path / "s.yaml")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_a_trial_refuses_a_term_its_loss_cannot_take():
    with pytest.raises(ValueError, match=r"terms\[0\]: feature_matching needs a critic's scores and features; "
                                         r"loss began's discriminator is an autoencoder"):
        TrialConfig(dataset="digits", loss="began", terms=["feature_matching"])
    with pytest.raises(ValueError, match=r"loss_params.w_r1: a term's weight must be a finite number ≥ 0"):
        TrialConfig(dataset="digits", terms=["r1"], loss_params={"w_r1": math.nan})


def test_the_readme_example_term_is_a_custom_term_a_trial_runs(tmp_path, monkeypatch):
    """studies/my_terms.py, imported from the study's folder as any custom term or loss is."""
    from pathlib import Path

    from bench.study import load_study

    study = load_study(Path(__file__).parent.parent / "studies" / "my_terms.yaml")  # puts studies/ on the search path
    term = terms.get("my_terms:moment_matching")
    assert (term.acts_on, term.needs, terms.weight_name(term.name)) == ("g", frozenset({"features"}),
                                                                         "w_moment_matching")
    real = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # variances (2, 0)
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # variances (0, 2)
    assert term.fn(context(real_features=real, fake_features=fake)).item() == pytest.approx(2 ** 2 + 2 ** 2)
    config = TrialConfig.from_params({**study.trial_fields("digits", "ns_moments"), "steps": 4, "eval_steps": [4],
                                      "metrics": {"num_samples": 50, "kid": False}},
                                     {"w_moment_matching": 0.3}, seed=0)
    result = run_trial(config, tmp_path)
    assert result.status == "completed" and config.resolved().hyperparameters()["w_moment_matching"] == 0.3


def test_the_penalty_terms_are_the_penalties_tested_in_test_penalties():
    """wgan_gp and dragan as D terms draw from the trial's generator and equal bench.penalties' functions."""
    from bench import penalties

    D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0))
    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    for term, penalty in (("wgan_gp", penalties.gradient_penalty), ("dragan", penalties.dragan_penalty)):
        value = terms.get(term).fn(context(real=real, fake=fake, discriminator=D, rng=torch.Generator().manual_seed(3)))
        assert value.item() == penalty(D, real, fake, torch.Generator().manual_seed(3)).item()
