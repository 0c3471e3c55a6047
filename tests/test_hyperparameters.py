"""Hyperparameters are checked against the loss: a value a loss never reads is an error naming the losses that do;
a custom loss declares its own (keyword arguments with defaults), found beside the study file, and a study searches
them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from bench import losses, registry
from bench.cli import main
from bench.study import load_study
from bench.config import TrialConfig
from bench.io import folder_name

QUICK = {"metrics": {"num_samples": 100, "kid": False, "isc": False}}


def test_every_loss_declares_what_it_reads():
    assert set(losses.get("ns_gan").hyperparameters) == {"lr", "beta1", "beta2", "optimizer", "d_batchnorm",
                                                          "n_disc", "r1_gamma"}
    assert {"gp_lambda"} <= set(losses.get("wgan_gp").hyperparameters) and "clip" not in losses.get("wgan_gp").hyperparameters
    assert "clip" in losses.get("wgan").hyperparameters
    assert {"began_gamma", "began_lambda_k", "n_disc"} <= set(losses.get("began").hyperparameters)
    assert "r1_gamma" not in losses.get("began").hyperparameters
    assert "n_disc" not in losses.get("vae").hyperparameters and "d_batchnorm" in losses.get("vae").hyperparameters
    assert losses.users("gp_lambda") == ["wgan_gp", "dragan"]


@pytest.mark.parametrize("flags, expected", [
    (["--loss", "ns_gan", "--gp-lambda", "5"], "gp_lambda: loss ns_gan does not use gp_lambda; losses that do: "
                                               "wgan_gp, dragan"),
    (["--loss", "ns_gan", "--clip", "0.1"], "clip: loss ns_gan does not use clip; losses that do: wgan"),
    (["--loss", "vae", "--n-disc", "5"], "n_disc: loss vae does not use n_disc; losses that do: mm_gan"),
    (["--loss", "wgan_gp", "--began-gamma", "0.5"], "losses that do: began"),
])
def test_a_flag_the_loss_ignores_is_an_error(tmp_path, capsys, flags, expected):
    assert main(["trial", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def _study(tmp_path, **changes):
    study = {"name": "s", "datasets": ["digits"], "losses": ["ns_gan", "wgan_gp"],
             "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}},
             "budget": {"samples": 2, "steps": 6}, **QUICK, "executor": {"name": "local", "workers": 1}}
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"loss_search_space": {"ns_gan": {"gp_lambda": 1.0}}},
     "loss_search_space.ns_gan.gp_lambda: loss ns_gan does not use gp_lambda; losses that do: wgan_gp, dragan"),
    ({"search_space": {"clip": {"dist": "loguniform", "low": 0.01, "high": 1}}},
     "search_space.clip: no loss of the study uses it; losses that do: wgan"),
    ({"search_space": {"margin": 1.0}}, "search_space.margin: unknown hyperparameter"),
    ({"loss_defaults": {"ns_gan": {"began_gamma": 0.5}}}, "loss_defaults.ns_gan.began_gamma: loss ns_gan does not"),
])
def test_a_searched_parameter_the_loss_ignores_is_an_error(tmp_path, capsys, changes, expected):
    assert main(["validate", str(_study(tmp_path, **changes))]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err


def test_the_shared_space_applies_to_the_losses_that_read_each_parameter(tmp_path):
    # The paper's shared space has n_disc, which the VAE does not read: the VAE is searched without it.
    study = load_study(_study(tmp_path, losses=["ns_gan", "vae"],
                              search_space={"n_disc": {"dist": "choice", "values": [1, 5]}, "lr": 1e-3}))
    assert set(study.space("ns_gan")) == {"n_disc", "lr"} and set(study.space("vae")) == {"lr"}


CUSTOM = textwrap.dedent("""
    import torch.nn.functional as F

    def margin_hinge(real, fake, margin=1.0, *, fake_weight=1.0):
        d_loss = F.relu(margin - real).mean() + fake_weight * F.relu(margin + fake).mean()
        return d_loss, -fake.mean()

    def needs_default(real, fake, margin):
        return real.mean(), fake.mean()

    def shadows(real, fake, lr=0.1):
        return real.mean(), fake.mean()
""")


@pytest.fixture
def loss_module(tmp_path, monkeypatch):
    """A custom loss module in its own folder (not on sys.path), with the current folder elsewhere."""
    folder = tmp_path / "losses_here"
    folder.mkdir()
    (folder / "gb_margin_losses.py").write_text(CUSTOM)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(registry.SEARCH_PATH_VARIABLE, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield folder
    sys.modules.pop("gb_margin_losses", None)


def test_a_custom_loss_declares_its_hyperparameters(loss_module, monkeypatch):
    monkeypatch.chdir(loss_module)  # the current folder is searched
    spec = losses.get("gb_margin_losses:margin_hinge")
    assert spec.params == ("margin", "fake_weight") and dict(spec.defaults) == {"margin": 1.0, "fake_weight": 1.0}
    assert set(spec.hyperparameters) == {*losses.COMMON_HYPERPARAMETERS, "n_disc", "r1_gamma", "margin", "fake_weight"}
    config = TrialConfig(loss="gb_margin_losses:margin_hinge", loss_params={"margin": 2.0}).resolved()
    assert config.loss_params == {"margin": 2.0, "fake_weight": 1.0}
    with pytest.raises(Exception, match="loss_params.width: loss gb_margin_losses:margin_hinge has no such"):
        TrialConfig(loss="gb_margin_losses:margin_hinge", loss_params={"width": 2.0})
    with pytest.raises(registry.UnknownName, match="parameter 'margin' needs a default"):
        losses.get("gb_margin_losses:needs_default")
    with pytest.raises(registry.UnknownName, match="'lr' is one of gan-bench's own"):
        losses.get("gb_margin_losses:shadows")


def test_a_custom_loss_beside_the_study_file_is_found_and_its_parameter_searched(loss_module, tmp_path):
    import pandas as pd

    (loss_module / "study.yaml").write_text(yaml.safe_dump({
        "name": "custom", "datasets": ["digits"], "losses": ["gb_margin_losses:margin_hinge"],
        "search_space": {"margin": {"dist": "uniform", "low": 0.5, "high": 2.0}},
        "budget": {"samples": 2, "steps": 5}, **QUICK, "executor": {"name": "local", "workers": 1}}))
    results = tmp_path / "results"
    # Run from another folder, without PYTHONPATH: the module is found beside the study file, also by the worker.
    assert main(["run", str(loss_module / "study.yaml"), "--results", str(results), "--no-progress"]) == 0
    table = pd.read_csv(results / "results.csv")
    assert table["param_margin"].iloc[0] == 1.0  # the default sample: the function's own default
    assert 0.5 <= table["param_margin"].iloc[-1] <= 2.0 and table["param_margin"].nunique() == 2
    assert (table["status"] == "completed").all()
    names = [p.name for p in (results / "trials").iterdir()]
    assert names and all(name == folder_name(name) and ":" not in name for name in names)


def test_an_unimportable_custom_loss_says_where_it_was_looked_for(loss_module, tmp_path, capsys):
    (loss_module / "gb_raises.py").write_text("raise RuntimeError('boom at import')\n")
    path = _study(tmp_path, losses=["gb_raises:f"], search_space={})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot import 'gb_raises'" in err and "study file's folder" in err and "\n" not in err
    path = _study(loss_module, losses=["gb_raises:f"], search_space={})  # beside it: found, and its error shown
    assert main(["validate", str(path)]) == 2
    assert "RuntimeError: boom at import" in capsys.readouterr().err


def test_folder_names_keep_only_safe_characters():
    assert folder_name("digits-pkg.mod:fn-0001-seed0") == "digits-pkg.mod_fn-0001-seed0"
    assert folder_name("a b/c") == "a_b_c"
