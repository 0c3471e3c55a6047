"""The gan-bench command: listing losses, one trial from flags, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from bench import losses
from bench.cli import main


def test_losses_lists_every_loss_with_a_description(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in losses.names():
        line = next(line for line in out.splitlines() if line.split()[0] == name)
        assert len(line.split()) > 2  # a description follows the name


def test_unknown_loss_lists_the_valid_names_and_writes_nothing(capsys, tmp_path):
    assert main(["trial", "--loss", "nope", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown loss 'nope'" in err
    for name in losses.names():
        assert name in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "lr: Input should be greater than 0"),
    (["--steps", "0"], "steps: Input should be greater than or equal to 1"),
    (["--eval-every", "0"], "--eval-every: must be a positive"),
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
