"""Damaged caches, through the real command line: every cache gan-bench builds is checked when read; a damaged one is
moved aside to `<name>.damaged`, said in one line on stderr and rebuilt to the same bytes or numbers, and the weights
files it cannot rebuild offline (Inception, VGG) are refused in one line naming the command that fetches them again.

Each case starts from a copy of a pristine cache, damages one file as a node killed mid-copy does (truncated to half
its size) or as a bad block does (random bytes of the same size), runs `gan-bench trial` (or `gan-bench run`) on it
and checks: the exit code, no traceback, exactly one 'damaged' line naming the file, the damaged bytes kept aside, and
the result rows (fid, kid, isc, d_loss, g_loss, … per evaluation) equal to those of the undamaged run, bit for bit.
The two kinds of damage take turns over the cases rather than doubling them: a trial costs 5-10 s, a retraining more.

The digits extractor and real features are built by the driver of `gan-bench run`, at torch's default thread count
(2 on a 2-core machine), and most rebuilds happen inside `gan-bench trial --threads 1`: float sums depend on the thread
count, so the same weights come back only if the rebuild reads the count recorded beside the cache.

Records written again after damage keep the thread count the cache was built with (a note kept apart from the cache),
and weights that cannot be rebuilt are refused in exactly one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from torch import nn

TRIAL = ["trial", "--dataset", "digits", "--loss", "ns_gan", "--steps", "30", "--eval-every", "15",
         "--num-samples", "100", "--seed", "1", "--threads", "1", "--no-progress"]
POLYGONS = [*TRIAL, "--dataset", "polygons", "--image-size", "16", "--dataset-option", "n_train=600",
            "--dataset-option", "n_test=200"]  # the later --dataset wins
STUDY = {"name": "damaged-caches", "datasets": ["digits"], "losses": ["ns_gan"],
         "budget": {"samples": 1, "steps": 30, "eval_every": 15}, "metrics": {"num_samples": 100},
         "executor": {"name": "local", "workers": 1}}
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
VGG16_FILE = "vgg16-397923af.pth"
TIMEOUT = 600


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def gan_bench(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(args), env=_env(cache), capture_output=True, text=True, timeout=TIMEOUT)


def _command(args) -> list[str]:
    return [sys.executable, "-m", "bench.cli", *map(str, args)]


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "GAN_BENCH_CACHE": str(cache)}
    env.pop("GAN_BENCH_DATA", None)
    # Idle OpenMP threads sleep rather than spin: the same numbers, but a 2-thread retraining on 2 cores shared with
    # other processes takes ~10 s instead of 60-150 s.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def rows(out: Path) -> list[dict]:
    """A trial's result rows without their timings."""
    return [{k: v for k, v in row.items() if k != "train_seconds"}
            for row in json.loads((out / "result.json").read_text())["rows"]]


def study_scores(results: Path) -> pd.DataFrame:
    table = pd.read_csv(results / "results.csv")
    return table.drop(columns=["wall_seconds", "train_seconds"])


def damage(path: Path, how: str) -> bytes:
    """Truncates `path` to half its size or overwrites it with random bytes of its size; returns what it holds now."""
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    else:
        path.write_bytes(os.urandom(size))
    return path.read_bytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def aside(path: Path) -> Path:
    return path.with_name(path.name + ".damaged")


def assert_moved_aside_in_one_line(stderr: str, path: Path) -> None:
    """stderr is exactly the one line of bench.io.move_aside for `path`, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"gan-bench: {path}: damaged ("), stderr
    assert lines[0].endswith(f"); moved to {path.name}.damaged, rebuilding it"), stderr


def only(paths) -> Path:
    [path] = list(paths)
    return path


def copy_cache(source: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(source, cache)
    return cache


def extractor(cache: Path, dataset: str = "digits") -> Path:
    return only((cache / "extractors").glob(f"domain-{dataset}-*.pt"))


def load_all(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_contents(a, b) -> None:
    """torch-fidelity's cache files hold a tensor, an array or a dict of them: equal to the last bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_contents(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        np.testing.assert_array_equal(a, b, strict=True)


# ---------------------------------------------------------------------------------------------------------------------
# Pristine caches, built once for the module


@dataclass
class Pristine:
    cache: Path
    rows: list[dict]  # of TRIAL (or POLYGONS) on this cache
    extractor_sha256: str
    study_results: Path | None = None


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Pristine:
    """The digits extractor and real features as the driver of `gan-bench run` builds them, and the rows of TRIAL
    (`--threads 1`) on them."""
    root = tmp_path_factory.mktemp("pristine-digits")
    cache = root / "cache"
    (root / "study.yaml").write_text(yaml.safe_dump(STUDY))
    run = gan_bench(cache, "run", root / "study.yaml", "--results", root / "results", "--no-progress")
    assert run.returncode == 0, run.stderr
    trial = gan_bench(cache, *TRIAL, "--out", root / "trial")
    assert trial.returncode == 0 and trial.stderr == "", trial.stderr
    weights = extractor(cache)
    # Both recorded at the driver's default thread count, which is not the trials' 1 on a machine of several cores:
    # the rebuilds below inside `trial --threads 1` must read it to make the same bytes.
    threads = json.loads(weights.with_suffix(".json").read_text())["threads"]
    assert [json.loads(p.read_text())["threads"] for p in (cache / "fidelity").glob("*.json")] == [threads]
    assert threads > 1 or os.cpu_count() == 1
    return Pristine(cache, rows(root / "trial"), sha256(weights), root / "results")


@pytest.fixture(scope="module")
def polygons_cache(tmp_path_factory) -> Pristine:
    """A small polygons dataset cache (and its extractor and real features), built by a trial, and its rows."""
    root = tmp_path_factory.mktemp("pristine-polygons")
    trial = gan_bench(root / "cache", *POLYGONS, "--out", root / "trial")
    assert trial.returncode == 0 and trial.stderr == "", trial.stderr
    return Pristine(root / "cache", rows(root / "trial"), sha256(extractor(root / "cache", "polygons")))


# ---------------------------------------------------------------------------------------------------------------------
# The domain extractor and its record


def test_damaged_extractor_is_retrained_to_the_same_weights_at_the_recorded_threads(digits_cache, tmp_path):
    """Truncated here; random bytes in the next test (each retraining costs seconds)."""
    cache = copy_cache(digits_cache.cache, tmp_path)
    weights = extractor(cache)
    record = weights.with_suffix(".json").read_text()
    damaged = damage(weights, "truncated")

    trial = gan_bench(cache, *TRIAL, "--out", tmp_path / "trial")
    assert trial.returncode == 0, trial.stderr
    assert_moved_aside_in_one_line(trial.stderr, weights)
    assert aside(weights).read_bytes() == damaged
    # Trained again at the driver's thread count, not the trial's --threads 1: the very same bytes.
    assert sha256(weights) == digits_cache.extractor_sha256
    assert weights.with_suffix(".json").read_text() == record
    assert rows(tmp_path / "trial") == digits_cache.rows


def test_damaged_extractor_record_is_written_again_from_the_weights(digits_cache, tmp_path):
    """Truncated here; random bytes in the study test below."""
    cache = copy_cache(digits_cache.cache, tmp_path)
    weights = extractor(cache)
    record_path = weights.with_suffix(".json")
    record = json.loads(record_path.read_text())
    mtime = weights.stat().st_mtime_ns
    damaged = damage(record_path, "truncated")

    trial = gan_bench(cache, *TRIAL, "--out", tmp_path / "trial")
    assert trial.returncode == 0, trial.stderr
    assert_moved_aside_in_one_line(trial.stderr, record_path)
    assert aside(record_path).read_bytes() == damaged
    assert json.loads(record_path.read_text()) == record
    assert weights.stat().st_mtime_ns == mtime and sha256(weights) == digits_cache.extractor_sha256  # not retrained
    assert not aside(weights).exists()
    assert rows(tmp_path / "trial") == digits_cache.rows


def _blocked(pids: set[int]) -> set[int]:
    """Those of `pids` waiting for an flock, from /proc/locks: 'N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE …'."""
    waiting = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[fields.index("->") + 1] == "FLOCK":
            waiting.add(int(fields[fields.index("->") + 4]))
    return waiting & pids


def _extractor_lock(weights: Path):
    """The lock bench holds while it checks, and rebuilds, the extractor at `weights` (bench.io's own function)."""
    from bench import io

    return io.cache_lock(weights)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs /proc/locks to see both processes wait")
def test_two_trials_finding_the_same_damaged_extractor_retrain_it_once(digits_cache, tmp_path, monkeypatch):
    """Random bytes here (truncated above). The test holds the extractor's lock until both trials wait for it (a trial
    takes no other lock before), so both find the damaged file at once; one moves it aside and retrains it, and the
    other must then read the new one."""
    cache = copy_cache(digits_cache.cache, tmp_path)
    monkeypatch.setenv("GAN_BENCH_CACHE", str(cache))
    weights = extractor(cache)
    damaged = damage(weights, "garbage")

    trials = []
    try:
        with _extractor_lock(weights):
            trials = [subprocess.Popen(_command([*TRIAL, "--out", tmp_path / f"trial{i}"]), env=_env(cache),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
            pids, deadline = {t.pid for t in trials}, time.monotonic() + TIMEOUT
            while _blocked(pids) != pids and all(t.poll() is None for t in trials):  # one that exits: reported below
                assert time.monotonic() < deadline, "the trials never reached the extractor's lock"
                time.sleep(0.1)
            assert weights.read_bytes() == damaged  # neither went past the lock
        outputs = [t.communicate(timeout=TIMEOUT) for t in trials]
    finally:
        for t in trials:
            if t.poll() is None:
                t.kill()
                t.wait()

    assert [t.returncode for t in trials] == [0, 0], outputs
    stderr = "".join(err for _, err in outputs)
    assert_moved_aside_in_one_line(stderr, weights)  # one of them moved it aside and retrained; the other read it
    assert [p.name for p in (cache / "extractors").glob("*.damaged")] == [aside(weights).name]
    assert aside(weights).read_bytes() == damaged  # not the rebuilt file, moved aside by the second
    assert sha256(weights) == digits_cache.extractor_sha256
    assert rows(tmp_path / "trial0") == rows(tmp_path / "trial1") == digits_cache.rows


# ---------------------------------------------------------------------------------------------------------------------
# torch-fidelity's real features and statistics


@pytest.mark.parametrize("how, kind", [("truncated", "stat-fid-features"), ("garbage", "features-features")])
def test_damaged_real_features_are_rebuilt_to_the_same_numbers(digits_cache, tmp_path, how, kind):
    cache = copy_cache(digits_cache.cache, tmp_path)
    target = only((cache / "fidelity").glob(f"*-{kind}.pt"))
    others = {p: p.read_bytes() for p in (cache / "fidelity").glob("*.pt") if p != target}
    original = load_all(target)
    damaged = damage(target, how)

    trial = gan_bench(cache, *TRIAL, "--out", tmp_path / "trial")
    assert trial.returncode == 0, trial.stderr
    assert_moved_aside_in_one_line(trial.stderr, target)
    assert aside(target).read_bytes() == damaged
    assert_same_contents(load_all(target), original)  # made again at the recorded thread count
    assert {p: p.read_bytes() for p in others} == others
    assert rows(tmp_path / "trial") == digits_cache.rows


def test_a_study_driver_rebuilds_damaged_caches_to_the_same_results(digits_cache, tmp_path):
    """`gan-bench run` into a new results folder on a cache whose extractor record and real statistics are damaged:
    both are rebuilt (one line each), and the study's scores are the pristine run's.
    (The extractor's weights are left whole: retraining them is what the tests above check, and costs seconds.)"""
    cache = copy_cache(digits_cache.cache, tmp_path)
    weights = extractor(cache)
    record = weights.with_suffix(".json")
    stats = only((cache / "fidelity").glob("*-stat-fid-features.pt"))
    damage(record, "garbage")
    damage(stats, "truncated")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))

    run = gan_bench(cache, "run", tmp_path / "study.yaml", "--results", tmp_path / "results", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    damaged = [line for line in run.stderr.splitlines() if ": damaged (" in line]
    assert [line.partition(": damaged (")[0] for line in damaged] == [f"gan-bench: {record}", f"gan-bench: {stats}"]
    assert aside(record).exists() and aside(stats).exists()
    assert json.loads(record.read_text()) == json.loads((digits_cache.cache / "extractors" / record.name).read_text())
    assert sha256(weights) == digits_cache.extractor_sha256
    pd.testing.assert_frame_equal(study_scores(tmp_path / "results"), study_scores(digits_cache.study_results))


# ---------------------------------------------------------------------------------------------------------------------
# A dataset's uint8 cache (polygons; digits and mnist5k have none on disk)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.npy"))}


@pytest.mark.parametrize("name, how", [("train.npy", "truncated"), ("meta.json", "garbage")])
def test_damaged_dataset_cache_is_moved_aside_and_built_again(polygons_cache, tmp_path, name, how):
    cache = copy_cache(polygons_cache.cache, tmp_path)
    folder = cache / "datasets" / "polygons-s16-seed0-n600-200"
    arrays, meta = _arrays(folder), (folder / "meta.json").read_text()
    assert sorted(arrays) == ["test.npy", "test_labels.npy", "train.npy", "train_labels.npy"]
    damaged = damage(folder / name, how)

    trial = gan_bench(cache, *POLYGONS, "--out", tmp_path / "trial")
    assert trial.returncode == 0, trial.stderr
    assert_moved_aside_in_one_line(trial.stderr, folder)
    assert (aside(folder) / name).read_bytes() == damaged  # the whole folder, as it was
    rebuilt = _arrays(folder)
    assert rebuilt.keys() == arrays.keys()
    for key, array in arrays.items():
        np.testing.assert_array_equal(rebuilt[key], array, strict=True)
    assert (folder / "meta.json").read_text() == meta
    assert sha256(extractor(cache, "polygons")) == polygons_cache.extractor_sha256
    assert rows(tmp_path / "trial") == polygons_cache.rows


def test_rewritten_records_keep_the_thread_count_the_caches_were_built_with(polygons_cache, tmp_path):
    """The polygons extractor and real features were first built inside `trial --threads 1`, so their records say 1.
    Written again after damage (from the weights, which are whole), they must still say 1: a later damaged weights
    file would otherwise be retrained at another count, to other weights, another protocol and other FIDs."""
    cache = copy_cache(polygons_cache.cache, tmp_path)
    records = [extractor(cache, "polygons").with_suffix(".json"), only((cache / "fidelity").glob("polygons-*.json"))]
    assert [json.loads(record.read_text())["threads"] for record in records] == [1, 1]
    for record in records:
        damage(record, "truncated")

    trial = gan_bench(cache, *POLYGONS, "--out", tmp_path / "trial")
    assert trial.returncode == 0, trial.stderr
    assert "Traceback" not in trial.stderr, trial.stderr
    assert [line.partition(": damaged (")[0] for line in trial.stderr.splitlines()] == [
        f"gan-bench: {record}" for record in records]
    assert sha256(extractor(cache, "polygons")) == polygons_cache.extractor_sha256  # not retrained
    assert rows(tmp_path / "trial") == polygons_cache.rows
    assert [json.loads(record.read_text())["threads"] for record in records] == [1, 1]


# ---------------------------------------------------------------------------------------------------------------------
# Weights that cannot be rebuilt offline: refused in one line


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> bytes:
    """The bytes of a state_dict of torch-fidelity's inception-v3-compat with random weights, as tests/test_metrics.py
    makes one (95 MB)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with pytest.MonkeyPatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        m.setattr(torch, "load", lambda *a, **k: {})
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    torch.save(net.state_dict(), path)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize("where, how", [("default", "truncated"), ("own file", "garbage")])
def test_damaged_inception_weights_are_refused_in_one_line(inception_weights, tmp_path, where, how):
    cache = tmp_path / "cache"
    path = cache / "weights" / INCEPTION_FILE if where == "default" else tmp_path / "mine" / "inception.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(inception_weights)
    damaged = damage(path, how)
    own = [] if where == "default" else ["--inception-weights", path]

    trial = gan_bench(cache, *TRIAL, "--extractor", "inception", *own, "--out", tmp_path / "trial")
    assert trial.returncode == 2, trial.stderr
    assert "Traceback" not in trial.stderr, trial.stderr
    assert not (tmp_path / "trial").exists()  # refused before the trial wrote anything
    refusal = trial.stderr.splitlines()[-1]
    assert refusal.startswith("gan-bench: error: ") and str(path) in refusal and "damaged" in refusal, trial.stderr
    if where == "default":  # moved aside, so that `gan-bench prefetch --inception` fetches it again
        assert "`gan-bench prefetch --inception`" in refusal, trial.stderr
        assert not path.exists() and aside(path).read_bytes() == damaged
    else:  # the user's own file is left where it is; prefetch fetches only the default one
        assert f"download {INCEPTION_FILE} there again" in refusal, trial.stderr
        assert path.read_bytes() == damaged and not aside(path).exists()
    assert trial.stderr.splitlines() == [refusal]


@pytest.fixture(scope="module")
def vgg16_weights(tmp_path_factory) -> bytes:
    """torchvision's VGG16 state_dict format, every tensor a zero expanded from one element: 4 KB, not 528 MB, and
    still accepted by bench.feature_nets (checked here)."""
    from bench import feature_nets

    with torch.device("meta"):
        shapes = {key: value.shape for key, value in torchvision.models.vgg16(weights=None).state_dict().items()}
    zero = torch.zeros(1)
    state = {key: zero.expand(shape) for key, shape in shapes.items()}
    with pytest.MonkeyPatch.context() as m:
        cache = tmp_path_factory.mktemp("vgg-cache")
        m.setenv("GAN_BENCH_CACHE", str(cache))
        (cache / "weights").mkdir()
        torch.save(state, cache / "weights" / VGG16_FILE)
        assert isinstance(feature_nets.vgg_feature_net("vgg16:relu3_3", torch.device("cpu")), nn.Module)
    return (cache / "weights" / VGG16_FILE).read_bytes()


def test_damaged_vgg_weights_are_refused_in_one_line(vgg16_weights, tmp_path):
    cache = tmp_path / "cache"
    path = cache / "weights" / VGG16_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(vgg16_weights)
    damaged = damage(path, "garbage")

    trial = gan_bench(cache, *TRIAL, "--term", "perceptual", "--perceptual-net", "vgg16", "--out", tmp_path / "trial")
    assert trial.returncode == 2, trial.stderr
    assert "Traceback" not in trial.stderr, trial.stderr
    assert not (tmp_path / "trial").exists()
    refusal = trial.stderr.splitlines()[-1]
    assert refusal.startswith(f"gan-bench: error: perceptual_net: {path} ") and "`gan-bench prefetch --vgg vgg16`" \
        in refusal, trial.stderr
    assert not path.exists() and aside(path).read_bytes() == damaged
    assert trial.stderr.splitlines() == [refusal]
