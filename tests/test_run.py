"""Running studies through the CLI with local workers: results, reports, status, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml

STUDY = {
    "name": "tiny",
    "datasets": ["digits"],
    "losses": ["ns_gan", "lsgan"],
    "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3},
                     "beta1": {"dist": "uniform", "low": 0.0, "high": 0.9}},
    "budget": {"samples": 2, "steps": 30, "eval_every": 15},
    "metrics": {"num_samples": 100},
    "executor": {"name": "local", "workers": 2},
}


def gan_bench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, **kwargs)


def test_tiny_study_end_to_end(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(STUDY))
    results = tmp_path / "out"
    run = gan_bench("run", str(tmp_path / "tiny.yaml"), "--results", str(results), "--no-progress", timeout=600)
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(results / "results.csv")
    assert {"dataset", "loss", "trial", "seed", "step", "status", "fid", "kid", "extractor", "wall_seconds",
            "param_lr", "param_beta1"} <= set(table.columns)
    assert len(table) == 2 * 2 * 2  # losses × samples × evaluation steps
    assert sorted(table.groupby("loss")["trial"].nunique()) == [2, 2]
    assert set(table["step"]) == {15, 30} and (table["status"] == "completed").all()
    assert table["fid"].notna().all() and table["extractor"].str.startswith("domain-digits").all()
    # The default configuration (compare_gan v1's) is the first sample of each loss, NS GAN's lr of 5e-5 although
    # it lies below the searched range.
    first = table[(table["trial"] == 0)].groupby("loss").first()
    assert (first.loc["ns_gan", "param_lr"], first.loc["ns_gan", "param_beta1"]) == (5e-5, 0.0)
    assert (first.loc["lsgan", "param_lr"], first.loc["lsgan", "param_beta1"]) == (2e-4, 0.5)
    # Every score names its protocol.
    assert table["protocol"].str.match(r"domain-digits-\S+@[0-9a-f]{12} resize=antialias real=test:360 gen=100$").all()
    # Every row says the thread count and device its run trained with, as the run recorded them (the study's one
    # thread, whatever the worker count).
    for row in table.itertuples():
        record = json.loads((results / row.folder / "result.json").read_text())
        assert (row.threads, row.device) == (record["threads"], record["device"]) and row.threads == 1
    for name in ("summary.csv", "summary.md", "fid_vs_budget.png", "study.yaml"):
        assert (results / name).stat().st_size > 0
    summary = (results / "summary.md").read_text()
    assert "ns_gan" in summary and "lsgan" in summary
    assert str(results / "summary.md") in run.stdout

    status = gan_bench("status", str(results), timeout=120)
    assert status.returncode == 0, status.stderr
    assert "ns_gan" in status.stdout and "queued" in status.stdout and "stale" in status.stdout

    again = gan_bench("run", str(tmp_path / "tiny.yaml"), "--results", str(results), "--no-progress", timeout=600)
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(results / "results.csv").equals(table)  # nothing re-run, nothing added

    other = dict(STUDY, budget={"samples": 3, "steps": 30})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    clash = gan_bench("run", str(tmp_path / "other.yaml"), "--results", str(results), timeout=120)
    assert clash.returncode == 2 and "holds this study with other settings (budget.eval_every: 15 there, null here)" \
        in clash.stderr


def test_resume_after_sigkill_finishes_exactly_the_budget(tmp_path):
    study = dict(STUDY, budget={"samples": 3, "steps": 300, "eval_every": 100})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    command = [sys.executable, "-m", "bench.cli", "run", str(tmp_path / "study.yaml"), "--results", str(results),
               "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    # Kill once a trial has left a checkpoint and another is still running: mid-trial, for real.
    while time.time() < deadline and not list((results / "trials").glob("*/checkpoint.pt")):
        time.sleep(0.2)
    assert driver.poll() is None, "the study finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    table = pd.read_csv(results / "results.csv")
    per_trial = table.groupby(["loss", "trial", "seed"])["step"].apply(list)
    assert len(per_trial) == 2 * 3  # exactly the budget: none lost, none duplicated
    assert all(steps == [100, 200, 300] for steps in per_trial)

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal")))
    interrupted = [t for loss in ("ns_gan", "lsgan")
                   for t in optuna.load_study(study_name=f"tiny/digits/{loss}", storage=storage).get_trials()
                   if t.user_attrs.get("status") == "interrupted"]
    assert interrupted, "no trial was running when the driver was killed"


def test_workers_are_pinned_one_gpu_each(monkeypatch):
    import torch

    from bench.executors.local import visible_gpus, worker_environments

    assert worker_environments(3, []) == [{}, {}, {}]
    assert worker_environments(3, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"},
                                                  {"CUDA_VISIBLE_DEVICES": "0"}]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]


def test_local_executor_places_workers_on_gpus():
    """`gpus: auto` and friends, on a simulated list of visible GPUs (this machine has none)."""
    from bench import BenchError
    from bench.executors.local import local_worker_environments
    from bench.study_fields import LocalExecutor

    pinned = lambda *gpus: [{"CUDA_VISIBLE_DEVICES": g} for g in gpus]
    assert local_worker_environments(LocalExecutor(workers=3), []) == [{}, {}, {}]  # no GPU: CPU workers
    assert local_worker_environments(LocalExecutor(workers=3), ["0", "1"]) == pinned("0", "1")  # one per GPU
    assert local_worker_environments(LocalExecutor(workers_per_gpu=2), ["0", "1"]) == pinned("0", "1", "0", "1")
    assert local_worker_environments(LocalExecutor(gpus=[1]), ["3", "5"]) == pinned("5")
    assert local_worker_environments(LocalExecutor(gpus="none", workers=2), ["0"]) == [{}, {}]
    assert local_worker_environments(LocalExecutor(), ["0", "1"], workers=3) == pinned("0", "1", "0")  # --workers
    with pytest.raises(BenchError, match="executor.gpus: GPU 2 is not visible; visible: 0..1"):
        local_worker_environments(LocalExecutor(gpus=[2]), ["0", "1"])
    with pytest.warns(UserWarning, match="none is visible: running CPU workers"):
        assert local_worker_environments(LocalExecutor(gpus=[0], workers=2), []) == [{}, {}]


def test_mini_paper_study_runs_both_stages_end_to_end(tmp_path):
    """studies/are_gans_equal_mini.yaml at test size: the same 8 models, 2 datasets and 2 stages, a few steps."""
    study = yaml.safe_load(open("studies/are_gans_equal_mini.yaml"))
    study.update(budget={"samples": 2, "steps": 8, "evaluations": 1}, confirm={"runs": 2, "first_seed": 1000},
                 dataset_options={"polygons": {"n_train": 600, "n_test": 200}},
                 metrics={"extractor": "domain", "num_samples": 50, "kid": False, "isc": True})
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    run = gan_bench("run", str(tmp_path / "mini.yaml"), "--results", str(results), "--no-progress", timeout=900)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\nconfirm ") == 16  # the final counts cover both stages
    table = pd.read_csv(results / "results.csv")
    search, confirm = table[table["stage"] == "search"], table[table["stage"] == "confirm"]
    assert search.groupby(["dataset", "loss"])["trial"].nunique().to_dict() == {
        (d, l): 2 for d in ("digits", "polygons") for l in study["losses"]}
    # Each pair's confirm runs re-train its best search trial (lowest best FID) with the confirm seeds.
    best = search.dropna(subset=["fid"]).groupby(["dataset", "loss", "trial"])["fid"].min()
    for (dataset, loss), group in confirm.groupby(["dataset", "loss"]):
        source = best.loc[dataset, loss].idxmin()
        assert set(group["source_trial"]) == {source}
        assert sorted(group["seed"]) == [1000, 1001]
        chosen = search[(search["dataset"] == dataset) & (search["loss"] == loss) & (search["trial"] == source)]
        assert group["param_lr"].iloc[0] == chosen["param_lr"].iloc[0]
    assert len(confirm.groupby(["dataset", "loss"])) == len(best.groupby(level=[0, 1]))
    markdown = (results / "paper_table.md").read_text()
    assert "| model | digits (ours) | digits (paper) | polygons (ours) | polygons (paper) |" in markdown
    assert "| vae |" in markdown and "only the ranking of models can be compared" in markdown
