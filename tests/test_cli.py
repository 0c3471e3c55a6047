"""The gan-bench command: listing losses, one trial from flags, one-line errors with exit code 2, exact option
names, --version, and defaults in every --help."""

import platform
import re
import subprocess
import sys

import pytest

from bench import losses, tasks, terms
from bench.cli import build_parser, main


def test_losses_lists_every_loss_with_a_description(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in losses.LOSSES.names():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert len(line.split()) > 2  # a description follows the name
    for name, term in terms.TERMS.items():  # and every term, with the loss it joins
        assert f"{name:18} {term.acts_on.upper()}: {term.description}" in out
    for name, task in tasks.TASKS.items():  # and every image-to-image task, with its options
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert task.description in line and all(option in line for option in task.options)


def test_unknown_loss_lists_the_valid_names_and_writes_nothing(capsys, tmp_path):
    assert main(["trial", "--loss", "nope", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown loss 'nope'" in err
    for name in losses.LOSSES.names():
        assert name in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "lr: Input should be greater than 0"),
    (["--dataset", "cifar"], "dataset: unknown dataset 'cifar'"),
    (["--model", "infogan", "--image-size", "18"], "multiples of 4"),
    (["--beta1", "1.5"], "beta1: Input should be less than 1"),
])
def test_bad_flags_fail_with_one_line_naming_the_field(capsys, tmp_path, flags, message):
    assert main(["trial", *flags, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gan-bench: error: ") and "\n" not in err
    assert message in err


def test_a_trial_from_the_command_line(tmp_path):
    out = tmp_path / "trial"
    run = subprocess.run([sys.executable, "-m", "bench.cli", "trial", "--dataset", "digits", "--loss", "hinge",
                          "--steps", "40", "--eval-every", "20", "--num-samples", "100", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "hinge on digits: completed after 40 steps" in run.stdout
    header = next(line for line in run.stdout.splitlines() if line.split()[:1] == ["step"])
    assert {"fid", "kid", "isc"} <= set(header.split())
    assert (out / "result.json").exists() and (out / "samples.png").exists()


@pytest.mark.parametrize("argv", [
    ["run", "study.yaml", "--worker", "1"],  # would be taken as --workers 1
    ["trial", "--n-dis", "5"],  # would be taken as --n-disc 5
    ["prefetch", "--incep"],
    ["--vers", "losses"],
])
def test_abbreviated_options_are_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_version_names_gan_bench_and_the_libraries_on_one_line(capsys):
    import optuna
    import torch
    import torch_fidelity
    import torchvision

    import bench

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gan-bench {bench.__version__} ") and out.count("\n") == 1
    for name, version in [("torch", torch.__version__), ("torchvision", torchvision.__version__),
                          ("torch-fidelity", torch_fidelity.__version__), ("optuna", optuna.__version__),
                          ("Python", platform.python_version())]:
        assert f"{name} {version}" in out


def test_trial_help_shows_defaults_and_says_when_the_loss_decides(capsys):
    from bench import data
    from bench.metrics import MetricsConfig
    from bench.config import TrialConfig

    with pytest.raises(SystemExit) as exit_:
        main(["trial", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    assert "training steps, counted as --count says (default: 500)" in text
    assert "--lr LR learning rate of both networks (default: the loss's, see `gan-bench losses`)" in text
    assert "(default: None)" not in text
    # Defaults that the help states in words, rather than the parser holding them, are those of the trial.
    fields = {**TrialConfig.model_fields, **MetricsConfig.model_fields}
    for flag, field in [("--batch-size N", "batch_size"), ("--z-dim N", "z_dim"), ("--num-samples N", "num_samples"),
                        ("--count {g_steps,d_steps}", "count"), ("--init {model,compare_gan,pytorch}", "init"),
                        ("--extractor {domain,inception}", "extractor")]:
        entry = text[text.index(flag, text.index("options:")):]  # this option's help, then the next ones'
        assert re.search(r"\(default: ([^)]*)\)", entry)[1] == str(fields[field].default), flag
    names = data.DATASETS.names()
    assert f"--dataset NAME the dataset: {', '.join(names[:-1])} or {names[-1]} (default: digits)" in text


@pytest.mark.parametrize("command", ["trial", "run", "prefetch", "validate", "status", "report", "losses"])
def test_every_help_shows_its_defaults_and_never_none(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    if command in ("trial", "run", "prefetch", "report"):
        assert "(default: " in text
