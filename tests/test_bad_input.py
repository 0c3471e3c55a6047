"""Every bad input to `gan-bench` is refused before any work starts: one line `gan-bench: error: <field or file>:
<what is expected>` on stderr, exit code 2, no traceback, and nothing written (no results folder, no study.yaml, no
journal, no trial folder) — as the README promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench import registry
from bench.cli import main

STUDY = {
    "name": "tiny",
    "datasets": ["digits"],
    "losses": ["ns_gan"],
    "budget": {"samples": 1, "steps": 5},
    "metrics": {"num_samples": 100},
}


def study_text(**changes: object) -> str:
    """STUDY as YAML with some top-level fields replaced (a field set to a str is written as it is, so that YAML's own
    reading of `1e30` or `.nan` is what gets tested)."""
    lines = [yaml.safe_dump({key: value}).strip() for key, value in STUDY.items() if key not in changes]
    lines += [f"{key}: {value}" if isinstance(value, str) else yaml.safe_dump({key: value}).strip()
              for key, value in changes.items()]
    return "\n".join(lines) + "\n"


def gan_bench(argv: list[str]) -> int:
    """main(argv)'s exit code; argparse's errors leave through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, and every folder (as b""): equal snapshots mean nothing was written."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b""
            for path in sorted(folder.rglob("*"))}


def assert_refused(capsys: pytest.CaptureFixture, code: int, *expected: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("gan-bench: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder as the current one (a default results folder would appear under it), with the custom
    loss search path and sys.path restored afterwards (loading a study extends both)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv(registry.SEARCH_PATH_VARIABLE, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a custom loss would write __pycache__
    return folder


# A bad study file: `validate` and `run` refuse it alike, naming the file and the field.
STUDY_FILES = {
    "binary file": (bytes(range(256)) * 2, "not a text file; expected a YAML study file"),  # 0x80-0xff: not UTF-8
    "steps 1e30 (YAML text)": (study_text(budget="{samples: 1, steps: 1e30}"),
                               "budget.steps: must be an integer in 1..10^9, got '1e30'"),
    "steps 10^30": (study_text(budget={"samples": 1, "steps": 10**30}), "budget.steps: must be an integer in 1..10^9"),
    "samples 10^30": (study_text(budget={"samples": 10**30, "steps": 5}),
                      "budget.samples: Input should be less than or equal to 1000000"),
    "steps 1.5": (study_text(budget={"samples": 1, "steps": 1.5}), "budget.steps: must be an integer in 1..10^9"),
    "an evaluation every step of 10^9": (study_text(budget={"samples": 1, "steps": 10**9, "eval_every": 1}),
                                         "budget.eval_every: 1,000,000,000 evaluations"),
    "evaluations 10^9": (study_text(budget={"samples": 1, "steps": 5, "evaluations": 10**9}),
                         "budget.evaluations: 1,000,000,000 evaluations"),
    "fixed lr .nan": (study_text(search_space="{lr: .nan}"), "search_space.lr: Input should be a finite number"),
    "fixed lr nan (a string)": (study_text(search_space="{lr: nan}"), "search_space.lr: Input should be a finite"),
    "fixed lr .inf": (study_text(search_space="{lr: .inf}"), "search_space.lr: Input should be a finite number"),
    "fixed lr negative": (study_text(search_space="{lr: -0.001}"), "search_space.lr: Input should be greater than 0"),
    "range low .nan": (study_text(search_space="{lr: {dist: loguniform, low: .nan, high: 0.1}}"),
                       "search_space.lr.low: Input should be a finite number"),
    "storage not a URL": (study_text(storage="notaurl"), "storage: not a database URL"),
    "storage unknown database": (study_text(storage="redis://user:secret@host"),
                                 "storage: 'redis' is not a database SQLAlchemy can open"),
    "storage in memory": (study_text(storage="'sqlite://'"), "storage: an in-memory SQLite database"),
    "custom loss raises at import": (study_text(losses=["gan_bench_broken_loss:loss"]),
                                     "losses.0: custom loss 'gan_bench_broken_loss:loss': cannot import "
                                     "'gan_bench_broken_loss' (RuntimeError: broken on purpose)"),
}


@pytest.mark.parametrize("content, message", STUDY_FILES.values(), ids=STUDY_FILES.keys())
def test_a_bad_study_file_is_one_line_and_nothing_written(work, tmp_path, capsys, content, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # Beside the study file, where custom losses are imported from.
    (inputs / "gan_bench_broken_loss.py").write_text("raise RuntimeError('broken on purpose')\n")
    path = inputs / "study.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in ("validate", "run"):
        assert_refused(capsys, gan_bench([command, str(path)]), f"gan-bench: error: {path}: {message}")
    assert snapshot(work) == {}  # no results/tiny, study.yaml or optuna.journal


def test_a_password_in_a_storage_url_is_not_printed(work, capsys):
    (work / "study.yaml").write_text(study_text(storage="redis://user:secret@host"))
    assert gan_bench(["validate", "study.yaml"]) == 2
    err = capsys.readouterr().err
    assert "secret" not in err and "user:***@host" in err


def test_a_storage_that_cannot_be_opened_is_refused_before_the_results_folder(work, capsys):
    (work / "study.yaml").write_text(study_text(storage=f"'sqlite:///{work}/missing/optuna.db'"))
    before = snapshot(work)
    assert_refused(capsys, gan_bench(["run", "study.yaml"]),
                   f"study.yaml: storage: cannot connect to sqlite:///{work}/missing/optuna.db (unable to open")
    assert snapshot(work) == before


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers: expected a positive integer, got 0"),
    (["--workers", "-1"], "--workers: expected a positive integer, got -1"),
    (["--workers", "two"], "--workers: expected a positive integer, got 'two'"),
])
def test_bad_run_flags_are_one_line(work, capsys, flags, message):
    (work / "study.yaml").write_text(study_text())
    before = snapshot(work)
    assert_refused(capsys, gan_bench(["run", "study.yaml", *flags]), f"gan-bench: error: {message}")
    assert snapshot(work) == before


@pytest.mark.parametrize("results, message", [
    ("taken", "taken: is a file, not a folder; choose another folder with --results"),
    ("taken/out", "taken/out: is inside taken, a file, not a folder"),
])
def test_results_where_a_file_is_is_refused_and_the_file_kept(work, capsys, results, message):
    (work / "study.yaml").write_text(study_text())
    (work / "taken").write_text("someone's notes\n")
    before = snapshot(work)
    assert_refused(capsys, gan_bench(["run", "study.yaml", "--results", results]), f"gan-bench: error: {message}")
    assert snapshot(work) == before


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write in. Permission bits do not stop root, so as root the folder is made
    immutable (chattr +i), which does; the test is skipped where the file system or the container forbids that."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not shutil.which("chattr"):
        pytest.skip("running as root and chattr is missing: no way to make a folder root cannot write in")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"running as root and chattr +i fails here ({made.stderr.strip()}): no way to make a folder root "
                    "cannot write in")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("inside", ["out", "deeper/out", "."], ids=["new folder", "new folders", "the folder itself"])
def test_a_results_folder_that_cannot_be_written_is_one_line_before_any_work(work, locked, capsys, inside):
    (work / "study.yaml").write_text(study_text())
    results = locked / inside
    assert_refused(capsys, gan_bench(["run", "study.yaml", "--results", str(results)]),
                   f"gan-bench: error: {results}: cannot write in {locked} (")
    assert snapshot(locked) == {} and snapshot(work) == {"study.yaml": study_text().encode()}


# Another user, for whom a root-owned folder is read-only: what `gan-bench run` meets on a shared machine. It needs an
# interpreter and an installation that user can read.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder user nobody can read, owned by root: pytest's own temporary folders are private to root."""
    folder = Path(tempfile.mkdtemp(prefix="gan-bench-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_another_users_unwritable_results_folder_is_one_line(shared):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a command as user nobody")
    home = shared / "home"  # where matplotlib, imported on the way, keeps its cache
    home.mkdir()
    os.chown(home, 65534, 65534)
    env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import bench.cli"], capture_output=True, text=True,
                           cwd=shared, env=env)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this interpreter and gan-bench: {' '.join(probe.stderr.split())[-200:]}")
    (shared / "study.yaml").write_text(study_text())
    (shared / "study.yaml").chmod(0o644)
    (shared / "rootonly").mkdir(mode=0o755)
    run = subprocess.run([*NOBODY, sys.executable, "-m", "bench.cli", "run", "study.yaml", "--results", "rootonly/out"],
                         capture_output=True, text=True, cwd=shared, env=env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr == ("gan-bench: error: rootonly/out: cannot write in rootonly (Permission denied); choose "
                          "another folder with --results\n")
    assert not (shared / "rootonly" / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps: expected a positive integer, got 0"),
    (["--steps", "-5"], "--steps: expected a positive integer, got -5"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
    (["--eval-every", "0"], "--eval-every: expected a positive integer, got 0"),
    (["--steps", str(10**12), "--eval-every", "1"], "--eval-every: 1,000,000,000,000 evaluations"),
    (["--steps", str(10**12)], "steps: Input should be less than or equal to 1000000000"),
    (["--lr", "nan"], "lr: Input should be a finite number"),
    (["--lr", "inf"], "lr: Input should be a finite number"),
    (["--lr", "-1"], "lr: Input should be greater than 0"),
    (["--out", "taken"], "taken: is a file, not a folder; choose another folder with --out"),
])
def test_bad_trial_flags_are_one_line_and_nothing_written(work, capsys, flags, message):
    (work / "taken").write_text("someone's notes\n")
    before = snapshot(work)
    # --out only where the case sets it: otherwise the default results/trials/... is what must not appear.
    assert_refused(capsys, gan_bench(["trial", *flags, "--no-progress"]), f"gan-bench: error: {message}")
    assert snapshot(work) == before
