"""Packing: one process trains several trials at once (bench.trial.run_trials, `executor.pack`), each exactly as it
would train alone; and the step that never reads the device (bench.trial.CHECK_EVERY)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch
import yaml

from bench import BenchError, trial
from bench.config import TrialConfig
from bench.data import load
from bench.device import resolve_device
from bench.kind import KINDS
from bench.trial import PackMember, run_trial, run_trials

SMALL = {"dataset": "digits", "steps": 30, "eval_steps": [15, 30],
         "metrics": {"num_samples": 100, "kid": False, "isc": False}}
# One of each kind of step: a critic with a penalty, one with R1 and a term on D's features, weight clipping with
# RMSProp and n_disc counted in D steps, BEGAN, the VAE.
MEMBERS = [
    {"loss": "ns_gan", "seed": 0, "lr": 1e-3},
    {"loss": "wgan_gp", "seed": 1, "gp_lambda": 5.0, "n_disc": 2},
    {"loss": "ns_gan", "seed": 2, "r1_gamma": 1.0, "terms": ["feature_matching"], "d_batchnorm": True},
    {"loss": "wgan", "seed": 3, "optimizer": "rmsprop", "n_disc": 3, "count": "d_steps"},
    {"loss": "began", "seed": 4},
    {"loss": "vae", "seed": 5},
]


def rows(result) -> str:
    """A result's rows without their timings, as text: float reprs round-trip, so equal text is equal bits (and a NaN
    equals a NaN)."""
    return repr([{k: v for k, v in row.items() if k != "train_seconds"} for row in result.rows])


def alone(config: TrialConfig, folder) -> str:
    return rows(run_trial(config, folder))


def test_every_kind_of_step_packed_equals_it_alone_bit_for_bit(tmp_path):
    configs = [TrialConfig(**SMALL, **member) for member in MEMBERS]
    packed = run_trials([PackMember(c, tmp_path / f"pack{i}") for i, c in enumerate(configs)])
    for i, (config, result) in enumerate(zip(configs, packed)):
        assert result.status == "completed" and result.steps_done == 30
        assert rows(result) == alone(config, tmp_path / f"alone{i}"), config.loss  # ==: bit for bit
        saved = torch.load(tmp_path / f"pack{i}" / "checkpoint.pt", weights_only=False)
        assert saved["config"]["seed"] == config.seed and saved["step"] == 30


def test_image_to_image_trials_pack(tmp_path):
    task = {"dataset": "digits", "steps": 4, "eval_steps": [2, 4], "image_size": 16,
            "metrics": {"num_samples": 100, "kid": False, "isc": False},
            "task": {"task": "superres", "options": {"factor": 2}}}
    configs = [TrialConfig(**task, loss="ns_gan", terms=["l1"], seed=0),
               TrialConfig(**task, loss="none", terms=["l1"], seed=1)]
    packed = run_trials([PackMember(c, tmp_path / f"pack{i}") for i, c in enumerate(configs)])
    for i, (config, result) in enumerate(zip(configs, packed)):
        assert rows(result) == alone(config, tmp_path / f"alone{i}")


def test_a_member_that_diverges_stops_alone(tmp_path):
    # lsgan_raw: the paper's lsgan squares a sigmoid, which stays bounded however large the learning rate.
    exploding = TrialConfig(**SMALL, loss="lsgan_raw", lr=1e8, beta1=0.0, seed=1)
    healthy = TrialConfig(**SMALL, loss="ns_gan", seed=2)
    diverged, completed = run_trials([PackMember(exploding, tmp_path / "a"), PackMember(healthy, tmp_path / "b")])
    reference = run_trial(exploding, tmp_path / "alone")
    assert diverged.status == reference.status == "diverged"
    assert diverged.steps_done == reference.steps_done < 30 and rows(diverged) == rows(reference)
    assert completed.status == "completed" and rows(completed) == alone(healthy, tmp_path / "c")


def test_pruning_one_member_stops_only_it(tmp_path):
    def prune(step, row):
        raise optuna.TrialPruned()

    configs = [TrialConfig(**SMALL, seed=seed) for seed in (0, 1, 2)]
    results = run_trials([PackMember(configs[0], tmp_path / "a"), PackMember(configs[1], tmp_path / "b", prune),
                          PackMember(configs[2], tmp_path / "c")])
    assert [r.status for r in results] == ["completed", "pruned", "completed"]
    assert [r["step"] for r in results[1].rows] == [15] and results[1].steps_done == 15
    assert rows(results[2]) == alone(configs[2], tmp_path / "alone")
    # Run again, the pruned member stays stopped; the finished ones replay from their checkpoints.
    again = run_trials([PackMember(c, tmp_path / name) for c, name in zip(configs, "abc")])
    assert [r.status for r in again] == ["completed", "pruned", "completed"]
    assert [rows(r) for r in again] == [rows(r) for r in results]


def test_a_member_that_raises_fails_alone(tmp_path, monkeypatch):
    gan_trial = KINDS.get("gan")
    step = gan_trial.step

    def broken(self, n):
        if self.config.seed == 1 and n == 10:
            raise RuntimeError("a custom loss that crashes")
        return step(self, n)

    monkeypatch.setattr(gan_trial, "step", broken)
    configs = [TrialConfig(**SMALL, seed=seed) for seed in (0, 1)]
    fine, failed = run_trials([PackMember(c, tmp_path / str(c.seed)) for c in configs])
    assert isinstance(failed, RuntimeError) and "crashes" in str(failed)
    monkeypatch.setattr(gan_trial, "step", step)
    assert rows(fine) == alone(configs[0], tmp_path / "alone")


def test_members_must_share_data_scoring_device_and_threads(tmp_path):
    with pytest.raises(BenchError, match=r"^pack: its trials differ in image_size; a pack shares"):
        run_trials([PackMember(TrialConfig(**SMALL), tmp_path / "a"),
                    PackMember(TrialConfig(**{**SMALL, "image_size": 8}), tmp_path / "b")])
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_divergence_between_checks_is_found_and_dated(tmp_path, monkeypatch):
    """The losses stay on the device between checks; a non-finite one found later still stops the run as diverged at
    the step it happened, with the rows it had."""
    config = TrialConfig(**{**SMALL, "steps": 60, "eval_steps": [1, 60]}, loss="lsgan_raw", lr=1e8,
                         beta1=0.0).resolved()
    # The first non-finite step, by hand: every value read after every step.
    dataset = load(config.dataset, config.image_size)
    kind = KINDS.get("gan")(config, dataset, resolve_device("cpu"))
    torch.manual_seed(config.seed)
    kind.build()
    kind.begin(torch.Generator().manual_seed(config.seed))
    first = next(s for s in range(1, 61) if not all(torch.isfinite(torch.as_tensor(v)) for v in kind.step(s).values()))
    assert 1 < first < 6
    monkeypatch.setattr(trial, "CHECK_EVERY", 7)  # found at step 7
    result = run_trial(config, tmp_path)
    assert result.status == "diverged" and result.steps_done == first
    assert [row["step"] for row in result.rows] == [1]


@pytest.mark.parametrize("member", [*MEMBERS, "translation"])
def test_a_step_never_reads_the_device(member, monkeypatch):
    """No .item(), bool(), float() or int() of a tensor in a training step of gan-bench's own code (the optimisers'
    step counters live on the CPU by design and are torch's)."""
    if member == "translation":
        config = TrialConfig(dataset="digits", image_size=16, loss="ns_gan", terms=["cycle", "identity"],
                             task={"task": "denoise", "unpaired": True}, metrics={"num_samples": 100}).resolved()
    else:
        config = TrialConfig(**SMALL, **member).resolved()
    kind = KINDS.get(config.kind)(config, load(config.dataset, config.image_size), resolve_device("cpu"))
    torch.manual_seed(0)
    kind.build()
    kind.begin(torch.Generator().manual_seed(0))
    reads = []

    def spy(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args):
            caller = sys._getframe(1).f_code.co_filename
            if f"torch{os.sep}optim" not in caller:
                reads.append((name, caller, sys._getframe(1).f_lineno))
            return original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        spy(name)
    for step in range(1, 4):
        kind.step(step)
    monkeypatch.undo()
    assert reads == []


STUDY = {"name": "packed", "datasets": ["digits"], "losses": ["ns_gan", "wgan_gp"],
         "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
         "budget": {"samples": 3, "steps": 200, "eval_every": 50}, "defaults": False,
         "metrics": {"num_samples": 100, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 1}}


def _study_rows(results) -> pd.DataFrame:
    table = pd.read_csv(results / "results.csv")
    keep = [c for c in table.columns if c not in ("train_seconds", "wall_seconds")]
    return table[keep].sort_values(["loss", "trial", "seed", "step"]).reset_index(drop=True)


def test_a_killed_packed_worker_resumes_every_member_to_the_rows_of_an_unpacked_run(tmp_path):
    for name, pack in (("one", 1), ("packed", 3)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**STUDY, "executor": {**STUDY["executor"],
                                                                                       "pack": pack}}))
    command = [sys.executable, "-m", "bench.cli", "run", "--no-progress", "--results"]
    one = subprocess.run([*command, str(tmp_path / "one"), str(tmp_path / "one.yaml")], capture_output=True,
                         text=True, timeout=900)
    assert one.returncode == 0, one.stderr
    results = tmp_path / "packed"
    driver = subprocess.Popen([*command, str(results), str(tmp_path / "packed.yaml")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    # Killed mid-pack: its three members have each written a checkpoint, and none has finished.
    deadline = time.time() + 600
    while len(list((results / "trials").glob("*/checkpoint.pt"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=60)
    assert len(list((results / "trials").glob("*/result.json"))) < 6  # the study was not done
    rerun = subprocess.run([*command, str(results), str(tmp_path / "packed.yaml")], capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    packed, reference = _study_rows(results), _study_rows(tmp_path / "one")
    assert len(reference) == 2 * 3 * 4
    pd.testing.assert_frame_equal(packed, reference, check_exact=True)


def test_a_worker_makes_its_feature_extractor_once_for_all_its_packs(tmp_path, monkeypatch):
    from bench import metrics

    made = []
    create = metrics.create_feature_extractor
    monkeypatch.setattr(metrics, "create_feature_extractor", lambda *a, **k: made.append(1) or create(*a, **k))
    monkeypatch.setattr(trial, "_kept_scorer", {})
    for pack in range(2):
        run_trials([PackMember(TrialConfig(**SMALL, seed=seed), tmp_path / f"{pack}-{seed}") for seed in (0, 1)])
    assert len(made) == 1
    run_trial(TrialConfig(**{**SMALL, "metrics": {"num_samples": 100, "kid": True}}), tmp_path / "other")
    assert len(made) == 2  # scored another way: a scorer of its own
