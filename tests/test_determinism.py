"""Determinism is a contract: a study fixes torch's thread count per trial, so the worker count cannot change its
results."""

from __future__ import annotations

import pandas as pd
import torch
import yaml

from bench.cli import main
from bench.study import load_study

STUDY = {"name": "det", "datasets": ["digits"], "losses": ["ns_gan", "wgan_gp"],
         "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}},
         "budget": {"samples": 2, "steps": 20, "eval_every": 10}, "threads": 1,
         "metrics": {"num_samples": 100, "kid": False, "isc": False}}


def test_one_or_two_workers_give_bit_identical_results(tmp_path):
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    tables = []
    for workers in (1, 2):
        assert main(["run", str(path), "--workers", str(workers), "--results", str(tmp_path / f"w{workers}"),
                     "--no-progress"]) == 0
        tables.append(pd.read_csv(tmp_path / f"w{workers}" / "results.csv"))
    keys = ["stage", "dataset", "loss", "trial", "seed", "step"]
    one, two = (t.sort_values(keys).reset_index(drop=True) for t in tables)
    assert len(one) == 2 * 2 * 2
    columns = keys + ["fid", "d_loss", "g_loss"]
    assert one[columns].equals(two[columns])  # exactly, not approximately


def test_a_trial_records_and_uses_the_studys_thread_count(tmp_path):
    import json

    from bench.config import TrialConfig
    from bench.trial import run_trial

    before = torch.get_num_threads()
    try:
        config = TrialConfig(**load_study_fields(tmp_path), seed=0)
        run_trial(config, tmp_path / "t")
        record = json.loads((tmp_path / "t" / "result.json").read_text())
        assert record["threads"] == 1 and record["config"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


def load_study_fields(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "budget": {"samples": 1, "steps": 3}}))
    return load_study(path).trial_fields("digits", "ns_gan")


def test_slurm_tasks_get_at_least_the_trials_threads(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "threads": 4, "executor": {"name": "slurm", "cpus_per_task": 2}}))
    assert main(["validate", str(path)]) == 2
    assert "executor.cpus_per_task: 2 is fewer than the study's threads (4)" in capsys.readouterr().err


def test_progress_names_each_trial_as_it_ends(tmp_path, capsys):
    import re

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "losses": ["ns_gan"], "budget": {"samples": 2, "steps": 6}}))
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    lines = re.findall(r"^det \(search\): digits ns_gan sample (\d): completed, best FID [\d.e+-]+, [\d.]+ steps/s$",
                       out, flags=re.M)
    assert sorted(lines) == ["0", "1"]  # one line per trial, each once
