"""A trial end to end on CPU: determinism, outputs, divergence, resume, every loss and model."""

import json
import math

import pytest
import torch
from PIL import Image

from bench import losses, metrics
from bench.config import TrialConfig
from bench.device import resolve_device
from bench.trial import COLLAPSE_SPREAD, run_trial

SMALL = {"dataset": "digits", "steps": 60, "eval_steps": [30, 60], "metrics": {"num_samples": 200}}


def test_same_seed_same_metrics_and_outputs(tmp_path):
    first = run_trial(TrialConfig(**SMALL, seed=3), tmp_path / "a")
    second = run_trial(TrialConfig(**SMALL, seed=3), tmp_path / "b")
    other = run_trial(TrialConfig(**SMALL, seed=4), tmp_path / "c")
    strip = lambda rows: [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]
    assert strip(first.rows) == strip(second.rows)
    assert strip(first.rows) != strip(other.rows)
    assert [row["step"] for row in first.rows] == [30, 60]
    assert first.status == "completed" and first.steps_done == 60


def test_trial_writes_checkpoint_samples_and_a_full_record(tmp_path):
    result = run_trial(TrialConfig(**SMALL), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 60 and set(checkpoint) >= {"G", "D", "opt_g", "opt_d", "rng"}
    assert checkpoint["stopped"] is None  # ran to its end: run again, it resumes (and has nothing left to train)
    with Image.open(tmp_path / "samples.png") as grid:
        assert grid.size == (8 * 17 + 1, 8 * 17 + 1)  # 8×8 samples of 16 px with 1 px padding
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "completed"
    assert record["config"]["seed"] == 0 and record["config"]["lr"] == 5e-5  # resolved (NS GAN's v1 default)
    assert set(record["versions"]) >= {"torch", "torch_fidelity", "gan_bench"}
    assert record["extractor"] == result.extractor and record["extractor"].startswith("domain-digits")
    assert record["rows"][-1]["fid"] == result.rows[-1]["fid"] > 0


def test_exploding_learning_rate_is_marked_diverged(tmp_path):
    # lsgan_raw: the paper's lsgan squares a sigmoid, which stays bounded however large the learning rate.
    config = TrialConfig(dataset="digits", loss="lsgan_raw", lr=1e8, beta1=0.0, steps=200, eval_steps=[200],
                         metrics={"num_samples": 100})
    result = run_trial(config, tmp_path)
    assert result.status == "diverged"
    assert result.steps_done < 200
    assert result.rows == []  # no FID is made up for a diverged run
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("loss", ["wgan_gp", "vae"])
def test_interrupted_trial_resumes_to_the_same_metrics(tmp_path, monkeypatch, loss):
    config = TrialConfig(**SMALL, loss=loss)
    reference = run_trial(config, tmp_path / "whole")

    calls = []
    real_score = metrics.Scorer.score

    def crash_on_second_evaluation(self, sample):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies after the step-30 checkpoint
        return real_score(self, sample)

    monkeypatch.setattr(metrics.Scorer, "score", crash_on_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 30
    monkeypatch.setattr(metrics.Scorer, "score", real_score)
    resumed = run_trial(config, tmp_path / "resumed")
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert drop_time(resumed.rows) == drop_time(reference.rows)


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    run_trial(TrialConfig(**SMALL, seed=1), tmp_path)
    fresh = run_trial(TrialConfig(**SMALL, seed=2), tmp_path / "fresh")
    reused = run_trial(TrialConfig(**SMALL, seed=2), tmp_path)
    assert reused.rows[0]["fid"] == fresh.rows[0]["fid"]


def test_a_checkpoint_written_before_a_config_field_existed_resumes(tmp_path):
    """A field added since (here `terms` and `perceptual_net`, at their defaults) does not make it another trial's."""
    first = run_trial(TrialConfig(**SMALL), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for field in ("terms", "perceptual_net"):
        del state["config"][field]
    torch.save(state, tmp_path / "checkpoint.pt")
    again = run_trial(TrialConfig(**SMALL), tmp_path)
    assert again.rows == first.rows and again.train_seconds == pytest.approx(first.train_seconds, abs=0.05)


# none: tests/test_translation.py
@pytest.mark.parametrize("loss", [name for name in losses.LOSSES.names() if name != "none"])
def test_every_loss_trains(tmp_path, loss):
    config = TrialConfig(dataset="digits", loss=loss, steps=8, eval_steps=[8], metrics={"num_samples": 100})
    result = run_trial(config, tmp_path)
    assert result.status == "completed" and result.rows[0]["fid"] > 0


def test_wgan_clips_the_discriminator(tmp_path):
    run_trial(TrialConfig(dataset="digits", loss="wgan", clip=0.02, steps=3, metrics={"num_samples": 100}), tmp_path)
    D = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["D"]
    # Every parameter; batch norm's running statistics are buffers, not weights, and are not clipped.
    weights = {name: t for name, t in D.items() if not name.endswith(("running_mean", "running_var",
                                                                       "num_batches_tracked"))}
    assert weights and all(t.abs().max() <= 0.02 for t in weights.values())


def test_infogan_model_trains(tmp_path):
    config = TrialConfig(dataset="digits", model="infogan", loss="wgan_gp", n_disc=1, d_batchnorm=True, steps=3,
                         metrics={"num_samples": 100})
    result = run_trial(config, tmp_path)
    assert result.status == "completed" and result.rows[0]["fid"] > 0
    # Its batch norm running statistics are still near their start (momentum 0.001), so its eval-mode samples vary
    # by less than one grey level: healthy all the same, which is why the collapse threshold lies far below that.
    assert COLLAPSE_SPREAD < result.rows[0]["spread"] < 1 / 255


def test_vae_trains_and_samples_from_its_prior(tmp_path):
    result = run_trial(TrialConfig(dataset="digits", loss="vae", steps=100, eval_steps=[50, 100],
                                   metrics={"num_samples": 200}), tmp_path)
    assert result.status == "completed" and [row["step"] for row in result.rows] == [50, 100]
    assert all(math.isfinite(row["fid"]) and row["fid"] > 0 for row in result.rows)
    assert all(row["d_loss"] >= 0 and row["g_loss"] > 0 for row in result.rows)  # KL and BCE
    assert json.loads((tmp_path / "result.json").read_text())["config"]["z_dist"] == "normal"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert any(name.startswith("head.") for name in checkpoint["D"])  # D's slot holds the encoder


def test_vae_latent_is_normal_whatever_z_dist_says():
    assert TrialConfig(loss="vae", z_dist="uniform").resolved().z_dist == "normal"
    assert TrialConfig(loss="ns_gan", z_dist="normal").resolved().z_dist == "normal"
    assert TrialConfig(loss="ns_gan").resolved().z_dist == "uniform"


def test_dcgan_model_trains(tmp_path):
    config = TrialConfig(dataset="digits", model="dcgan", image_size=16, d_batchnorm=True, steps=5,
                         metrics={"num_samples": 100})
    result = run_trial(config, tmp_path)
    assert result.status == "completed" and result.rows[0]["fid"] > 0


def test_loss_defaults_fill_in_and_explicit_values_win():
    resolved = TrialConfig(loss="wgan_gp").resolved()
    # compare_gan v1's WGAN-GP default (params.py 168-171): Adam's own beta2 0.999, no batch norm in D.
    assert (resolved.n_disc, resolved.gp_lambda, resolved.lr, resolved.beta2) == (5, 10, 1e-4, 0.999)
    assert resolved.d_batchnorm is False and resolved.optimizer == "adam" and resolved.count == "g_steps"
    assert resolved.clip is None and resolved.eval_steps == [500]
    assert TrialConfig(loss="wgan_gp", n_disc=2, lr=3e-3).resolved().n_disc == 2
    assert TrialConfig(loss="wgan").resolved().clip == 0.01


def test_cuda_falls_back_to_cpu_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert resolve_device("cuda:1") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_amp_on_cpu_is_ignored_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="amp is for CUDA only"):
        result = run_trial(TrialConfig(**SMALL, amp=True), tmp_path / "amp")
    plain = run_trial(TrialConfig(**SMALL), tmp_path / "plain")
    assert result.rows[-1]["fid"] == plain.rows[-1]["fid"]


@pytest.mark.parametrize("field, value, message", [
    ("loss", "nope", "unknown loss 'nope'"),
    ("dataset", "nope", "unknown dataset"),
    ("model", "nope", "unknown model"),
    ("eval_steps", [0], "eval_steps"),
    ("lr", -1.0, "greater than 0"),
    ("device", "tpu", "expected auto, cpu"),
])
def test_bad_config_is_rejected(field, value, message):
    with pytest.raises(Exception, match=message):
        TrialConfig(**{field: value})


def test_a_damaged_checkpoint_restarts_the_trial_to_the_same_metrics(tmp_path):
    # A checkpoint that cannot be read (a bad disk, a partial copy) must not fail the trial for good: it starts over,
    # and being a pure function of its config it makes the same rows again.
    config = TrialConfig(**SMALL)
    whole = run_trial(config, tmp_path / "whole")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.pt").write_bytes((tmp_path / "whole" / "checkpoint.pt").read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable.*starts over"):
        again = run_trial(config, damaged)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]
    assert strip(again.rows) == strip(whole.rows) and again.status == "completed"
