"""On CUDA: a trial, its exact resume, bfloat16 autocast, a step that never waits for the device, a pack, local
workers pinned one per GPU, and the InfoGAN trial scored with Inception. Skipped without CUDA; run them wherever a GPU
is: `pytest -m gpu`."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from bench import metrics
from bench.config import TrialConfig
from bench.data import load
from bench.device import resolve_device
from bench.kind import KINDS
from bench.trial import PackMember, read_checkpoint, run_trial, run_trials

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SMALL = {"dataset": "digits", "steps": 40, "eval_steps": [20, 40], "device": "cuda",
         "metrics": {"num_samples": 200, "kid": False}}


def rows(result) -> str:
    """Rows without timings, as text (float reprs round-trip: equal text, equal bits; NaN equals NaN)."""
    return repr([{k: v for k, v in row.items() if k != "train_seconds"} for row in result.rows])


@pytest.mark.parametrize("loss", ["ns_gan", "wgan_gp", "began", "vae"])
def test_a_trial_on_cuda_trains_scores_and_records_its_device(tmp_path, loss):
    result = run_trial(TrialConfig(**SMALL, loss=loss), tmp_path)
    assert result.status == "completed" and result.device.startswith("cuda")
    assert all(math.isfinite(row["fid"]) for row in result.rows)


@pytest.mark.parametrize("amp", [False, True])
def test_an_interrupted_cuda_trial_resumes_exactly(tmp_path, monkeypatch, amp):
    """The checkpoint's CUDA generator state is a CPU byte tensor; every load path must give it back as one."""
    config = TrialConfig(**SMALL, loss="wgan_gp", amp=amp)
    reference = run_trial(config, tmp_path / "whole")
    calls, score = [], metrics.Scorer.score

    def crash_on_second_evaluation(self, sample):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(self, sample)

    monkeypatch.setattr(metrics.Scorer, "score", crash_on_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, tmp_path / "resumed")
    monkeypatch.setattr(metrics.Scorer, "score", score)
    assert rows(run_trial(config, tmp_path / "resumed")) == rows(reference)


@pytest.mark.parametrize("resumed", [False, True])
@pytest.mark.parametrize("loss", ["ns_gan", "wgan_gp", "began", "vae"])
def test_a_cuda_step_never_synchronises(tmp_path, loss, resumed):
    """Nor after a resume: the optimisers' step counters must come back on the CPU."""
    config = TrialConfig(**SMALL, loss=loss).resolved()
    device = resolve_device("cuda")
    kind = KINDS.get("gan")(config, load(config.dataset, config.image_size), device)
    torch.manual_seed(0)
    kind.build()
    kind.begin(torch.Generator(device).manual_seed(0))
    if resumed:
        run_trial(config, tmp_path)
        kind.load_state_dict(read_checkpoint(tmp_path / "checkpoint.pt", config.model_dump(mode="json")))
    kind.step(1)  # the first step's lazy initialisations (cuBLAS handles, the optimisers' state) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(2, 6):
            kind.step(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_pack_on_cuda_equals_its_members_alone(tmp_path):
    configs = [TrialConfig(**SMALL, loss=loss, seed=seed) for seed, loss in enumerate(["ns_gan", "wgan_gp", "vae"])]
    packed = run_trials([PackMember(c, tmp_path / f"pack{i}") for i, c in enumerate(configs)])
    for i, (config, result) in enumerate(zip(configs, packed)):
        assert rows(result) == rows(run_trial(config, tmp_path / f"alone{i}"))


def test_local_workers_are_pinned_one_per_gpu(tmp_path):
    study = {"name": "gpus", "datasets": ["digits"], "losses": ["ns_gan"], "defaults": False,
             "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
             "budget": {"samples": 2 * torch.cuda.device_count(), "steps": 20, "eval_every": 20},
             "metrics": {"num_samples": 100, "kid": False, "isc": False},
             "executor": {"name": "local", "gpus": "auto", "workers_per_gpu": 1, "pack": 2}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    run = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "study.yaml"), "--results",
                          str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    # Each worker sees only its GPU, as cuda:0.
    assert set(table["device"]) == {"cuda:0"} and set(table["status"]) == {"completed"}


def test_the_infogan_trial_scored_with_inception_on_cuda(tmp_path, inception_weights):
    config = TrialConfig(dataset="mnist5k", model="infogan", image_size=28, loss="ns_gan", count="d_steps", n_disc=5,
                         steps=50, eval_steps=[25, 50], device="cuda",
                         metrics={"extractor": "inception", "inception_weights": str(inception_weights),
                                  "num_samples": 500, "num_real": 500})
    result = run_trial(config, tmp_path)
    assert result.status in ("completed", "collapsed") and result.extractor == "inception-v3-compat"
    assert [row["step"] for row in result.rows][:1] == [25] and math.isfinite(result.rows[0]["fid"])
