"""Golden outputs: a change that is not meant to move numbers proves it. Short trials of every kind (each GAN
algorithm, a composite with feature matching, a relativistic loss, the paper's d_steps count with RMSProp; pix2pix,
CycleGAN and CUT on a task) and a quickstart-sized study were recorded by the code before the structure of issue 19
(commit 5cc534d); today's code must give the same rows and result.json, bit for bit, and resume a checkpoint that
code wrote to the same rows.

Bit-identity holds on the same torch build and CPU kernels (the fingerprint below): another machine's vector unit
sums floats in another order. There the values are checked to a float32 tolerance instead, and the test says so.

Record again (only when numbers are meant to move): `python tests/test_golden.py --record`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

HERE = Path(__file__).parent / "golden"
FAST = {"dataset": "digits", "batch_size": 16, "threads": 1, "steps": 4, "eval_steps": [2, 4],
        "metrics": {"num_samples": 100, "kid": False, "isc": False}}
CASES: dict[str, dict[str, Any]] = {
    "ns_gan": {"loss": "ns_gan"},
    "wgan_gp": {"loss": "wgan_gp", "n_disc": 2},
    "dragan": {"loss": "dragan", "metrics": {"num_samples": 100, "kid": True, "kid_subsets": 5, "isc": False}},
    "began": {"loss": "began", "n_disc": 2},
    "vae": {"loss": "vae"},
    "composite_feature_matching": {"loss": "ns_gan", "terms": ["feature_matching", "r1"],
                                   "loss_params": {"w_feature_matching": 10.0, "w_r1": 0.5}},
    "rasgan": {"loss": "rasgan"},
    "wgan_rmsprop_d_steps": {"loss": "wgan", "optimizer": "rmsprop", "count": "d_steps", "n_disc": 2, "steps": 6,
                             "eval_steps": [3, 6]},
    "dcgan_hinge": {"loss": "hinge", "model": "dcgan", "image_size": 16, "r1_gamma": 1.0},
    "pix2pix": {"task": {"task": "superres", "options": {"factor": 2}}, "loss": "ns_gan", "terms": ["l1"],
                "image_size": 16},
    "cyclegan": {"task": {"task": "denoise", "unpaired": True}, "loss": "lsgan_raw", "terms": ["cycle", "identity"],
                 "n_disc": 2},
    "cut": {"task": {"task": "denoise", "unpaired": True}, "loss": "lsgan_raw", "terms": ["patchnce"],
            "image_size": 16},
    "regression_only": {"task": {"task": "inpaint"}, "loss": "none", "terms": ["l1", "ssim"], "image_size": 16},
}
# A checkpoint written by the old code after the first evaluation, resumed by today's to the case's rows.
CHECKPOINT_CASES = ("ns_gan", "cyclegan")
STUDY = {"name": "golden", "datasets": ["digits"], "losses": ["ns_gan", "wgan_gp", "hinge"], "model": "mlp",
         "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 3e-3},
                          "n_disc": {"dist": "choice", "values": [1, 2]}},
         "loss_search_space": {"wgan_gp": {"gp_lambda": {"dist": "loguniform", "low": 0.1, "high": 100}}},
         "sampler": {"name": "random", "seed": 0}, "budget": {"samples": 2, "steps": 30, "eval_every": 15},
         "defaults": True, "seeds": [0], "threads": 1, "metrics": {"num_samples": 200, "kid": False, "isc": False},
         "executor": {"name": "local", "workers": 1}}
TIMING = {"train_seconds", "eval_seconds", "wall_seconds", "seconds"}
# What a result.json may gain without moving a number: fields that describe the run, not its values.
DESCRIPTIVE = {"versions"}


def fingerprint() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def config(name: str):
    from bench.config import TrialConfig

    return TrialConfig(**{**FAST, **CASES[name]}, seed=0)


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return without_timing({k: v for k, v in record.items() if k not in DESCRIPTIVE})


def recorded_fields(got: dict[str, Any], want: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`got` with only the (nested) fields `want` has; a field it has beyond those must be at its default."""
    kept = {}
    for key, value in got.items():
        if key not in want:
            assert value == defaults[key], f"{key}: a new field must be at its default to leave the numbers as they were"
        elif isinstance(value, dict) and isinstance(want[key], dict) and isinstance(defaults.get(key), dict):
            kept[key] = recorded_fields(value, want[key], defaults[key])
        else:
            kept[key] = value
    return kept


def run_case(name: str, out: Path) -> dict[str, Any]:
    from bench.trial import run_trial

    run_trial(config(name), out)
    return comparable(json.loads((out / "result.json").read_text()))


def run_study(folder: Path) -> pd.DataFrame:
    from bench.cli import main

    path = folder / "golden.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(STUDY))
    assert main(["run", str(path), "--results", str(folder / "results"), "--no-progress"]) == 0
    return pd.read_csv(folder / "results" / "results.csv")


def study_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The recorded columns, sorted, with the timing columns left out."""
    golden = pd.read_csv(HERE / "study.csv")
    keys = ["stage", "dataset", "loss", "trial", "seed", "step"]
    return table[list(golden.columns)].sort_values(keys).reset_index(drop=True)


def record(work: Path) -> None:
    """Writes every golden output with the code on sys.path (run by the old code, once), in a fresh cache and at one
    thread, as the tests run."""
    os.environ["GAN_BENCH_CACHE"] = str(work / "cache")
    torch.set_num_threads(1)
    HERE.mkdir(exist_ok=True)
    (HERE / "fingerprint.json").write_text(json.dumps(fingerprint(), indent=1) + "\n")
    results = {name: run_case(name, work / name) for name in CASES}
    (HERE / "trials.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    for name in CHECKPOINT_CASES:
        from bench.trial import run_trial

        class Stop(Exception):
            pass

        def stop(step: int, row: dict[str, Any]) -> None:
            raise Stop

        out = work / f"{name}-checkpoint"
        with pytest.raises(Stop):
            run_trial(config(name), out, on_evaluation=stop)
        target = HERE / f"{name}-checkpoint"
        target.mkdir(exist_ok=True)
        for file in ("checkpoint.pt", "config.json"):
            shutil.copy(out / file, target / file)
    table = run_study(work / "study")
    keep = [c for c in table.columns if c not in TIMING]
    table = table[keep].sort_values(["stage", "dataset", "loss", "trial", "seed", "step"])
    table.to_csv(HERE / "study.csv", index=False)


def same_machine() -> bool:
    return json.loads((HERE / "fingerprint.json").read_text()) == fingerprint()


def assert_matches(got: Any, want: Any, where: str = "") -> None:
    """Equal, bit for bit, on the recording's machine; elsewhere floats to float32 precision, with a note."""
    if same_machine():
        assert got == want, where
        return
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_matches(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_matches(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-5) or (math.isnan(got) and math.isnan(want)), where
    else:
        assert got == want, where


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_a_fresh_cache(tmp_path_factory):
    """The domain extractors and real-feature caches that the FIDs read are built at the thread count of the process
    that builds them first: here, as when recording, a fresh cache built at one thread."""
    before, cache = torch.get_num_threads(), os.environ.get("GAN_BENCH_CACHE")
    os.environ["GAN_BENCH_CACHE"] = str(tmp_path_factory.mktemp("golden-cache"))
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    os.environ["GAN_BENCH_CACHE"] = cache or ""
    if cache is None:
        del os.environ["GAN_BENCH_CACHE"]


GOLDEN = json.loads((HERE / "trials.json").read_text()) if (HERE / "trials.json").exists() else {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_trial_gives_the_recorded_result_bit_for_bit(name, tmp_path):
    got = run_case(name, tmp_path / name)
    want = GOLDEN[name]
    from bench.config import TrialConfig

    # A config field added since, at its default, moves no number: it is left out, and checked to be at its default.
    got["config"] = recorded_fields(got["config"], want["config"], TrialConfig().model_dump(mode="json"))
    assert_matches(got, want, name)


@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_a_checkpoint_written_by_the_old_code_resumes_to_the_same_rows(name, tmp_path):
    out = tmp_path / name
    shutil.copytree(HERE / f"{name}-checkpoint", out)
    before = torch.load(out / "checkpoint.pt", weights_only=False)
    assert before["step"] == CASES[name].get("eval_steps", FAST["eval_steps"])[0]  # resumed, not started over
    got = run_case(name, out)
    assert_matches(got["rows"], GOLDEN[name]["rows"], name)
    assert got["status"] == GOLDEN[name]["status"] and got["steps_done"] == GOLDEN[name]["steps_done"]


def test_a_quickstart_sized_study_gives_the_recorded_rows(tmp_path):
    table = study_rows(run_study(tmp_path))
    golden = pd.read_csv(HERE / "study.csv")
    assert len(golden) == 3 * 2 * 2  # 3 losses × (the default + 1 sample) × 2 evaluations
    if same_machine():
        pd.testing.assert_frame_equal(table, golden, check_exact=True)
    else:
        pd.testing.assert_frame_equal(table, golden, rtol=1e-3, atol=1e-5)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        record(Path(work))
