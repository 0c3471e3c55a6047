"""The one registry type (bench.registry) and every registry of named things: names taken once, one-line messages
that list the valid names, and every listing, --help and message reading the registry, so that an entry added to it
shows everywhere at once; a metric's direction read from its entry; `gan-bench trial`'s flags made from TrialConfig."""

import dataclasses
import math
import re
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import optuna
import pandas as pd
import pytest
import torch
import yaml
from pydantic import ValidationError

from bench import BenchError, data, losses, metric_registry, models, penalties, report, tasks, terms
from bench.cli import build_parser, main
from bench.config import TrialConfig
from bench.plan import Plan
from bench.queue import prepare
from bench.registry import Registry, UnknownName
from bench.study import load_study
from bench.tasks import TaskSpec

# the type


def test_a_name_is_registered_once():
    widgets = Registry("widget")
    widgets.add("a", 1, "the first")
    with pytest.raises(BenchError, match="^widget 'a' is registered twice$"):
        widgets.add("a", 2)
    with pytest.raises(BenchError, match="registered twice"):
        widgets.register("a")(3)
    assert widgets.get("a") == widgets["a"] == 1 and widgets.description("a") == "the first"


def test_an_unknown_name_is_one_line_listing_the_valid_ones_in_order():
    widgets = Registry("widget")
    for name in ("b", "a", "c"):
        widgets.register(name, f"widget {name}")(name.upper())
    with pytest.raises(UnknownName) as info:
        widgets.get("d")
    assert str(info.value) == widgets.unknown("d") == "unknown widget 'd'; valid: b, a, c"
    assert isinstance(info.value, BenchError)
    with pytest.raises(UnknownName, match="unknown widget 'd'"):
        widgets.description("d")
    assert widgets.names() == list(widgets) == ["b", "a", "c"] and len(widgets) == 3
    assert widgets.items() == [("b", "B"), ("a", "A"), ("c", "C")]
    assert "a" in widgets and "d" not in widgets


# every registry

REGISTRIES = {"loss": (losses, "LOSSES"), "loss term": (terms, "TERMS"), "penalty": (penalties, "PENALTIES"),
              "model": (models, "MODELS"), "dataset": (data, "DATASETS"), "task": (tasks, "TASKS"),
              "metric": (metric_registry, "METRICS")}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registry_is_a_registry_with_one_line_descriptions(kind):
    module, attribute = REGISTRIES[kind]
    registry = getattr(module, attribute)
    assert isinstance(registry, Registry) and registry.kind == kind and len(registry) > 0
    for name in registry:
        assert registry.description(name) and "\n" not in registry.description(name), name


def _task(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return targets


# (kind, how an entry is added to the scratch registry, a lookup of an unknown name that must list it)
LOOKUPS = [
    ("loss", lambda: losses.LOSSES.add("extra_loss", losses.LOSSES.get("hinge"), "x"), lambda: losses.get("nope")),
    ("loss term", lambda: terms.TERMS.add("extra_term", terms.TERMS.get("r1"), "x"), lambda: terms.get("nope")),
    ("penalty", lambda: penalties.PENALTIES.add("extra_penalty", penalties.dragan_penalty, "x"),
     lambda: penalties.PENALTIES.get("nope")),
    ("model", lambda: models.MODELS.add("extra_model", models.MODELS.get("mlp"), "x"),
     lambda: models.build("nope", (1, 8, 8), 4)),
    ("model", lambda: models.MODELS.add("extra_model", models.MODELS.get("mlp"), "x"),
     lambda: TrialConfig(model="nope")),
    ("dataset", lambda: data.DATASETS.add("extra_dataset", data.DATASETS.get("digits"), "x"), lambda: data.load("nope")),
    ("dataset", lambda: data.DATASETS.add("extra_dataset", data.DATASETS.get("digits"), "x"),
     lambda: TrialConfig(dataset="nope")),
    ("task", lambda: tasks.register("extra_task", "x")(_task), lambda: TaskSpec(task="nope")),
    ("metric", lambda: metric_registry.METRICS.add("extra_metric", metric_registry.METRICS.get("fid"), "x"),
     lambda: metric_registry.METRICS.get("nope")),
]


@pytest.mark.parametrize("kind, add, lookup", LOOKUPS)
def test_every_unknown_name_message_lists_an_entry_added_to_its_registry(scratch_registry, kind, add, lookup):
    scratch_registry(*REGISTRIES[kind])
    add()
    with pytest.raises((BenchError, ValidationError)) as info:
        lookup()
    message = str(info.value)
    assert f"unknown {kind} 'nope'" in message and f"extra_{kind.split()[-1]}" in message


@pytest.mark.parametrize("field, value", [("datasets", ["digits", "nope"]), ("model", "nope")])
def test_a_studys_unknown_dataset_or_model_lists_an_entry_added_to_its_registry(scratch_registry, tmp_path, field,
                                                                              value):
    kind = field.removesuffix("s")
    scratch_registry(*REGISTRIES[kind])
    if kind == "dataset":
        data.DATASETS.add("extra_dataset", data.DATASETS.get("digits"), "x")
    else:
        models.MODELS.add("extra_model", models.MODELS.get("mlp"), "x")
    study = {"name": "s", "datasets": ["digits"], "losses": ["ns_gan"], "budget": {"samples": 1, "steps": 2},
             field: value}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises((BenchError, ValidationError)) as info:
        load_study(tmp_path / "s.yaml")
    assert f"unknown {kind} 'nope'" in str(info.value) and f"extra_{kind}" in str(info.value)


def test_gan_bench_losses_lists_a_newly_added_loss_term_and_metric(scratch_registry, capsys):
    scratch_registry(losses, "LOSSES").add("my_loss", dataclasses.replace(losses.LOSSES.get("hinge"), name="my_loss"),
                                           "a loss a test added")
    scratch_registry(terms, "TERMS").add("my_term", terms.TERMS.get("r1"), "a term a test added")
    mine = metric_registry.Metric("my_metric", "mine", higher_is_better=True, objective=True)
    scratch_registry(metric_registry, "METRICS").add("my_metric", mine, "a metric a test added")
    assert main(["losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.match(r"my_loss +a loss a test added \(defaults: lr 0.0002", line) for line in lines)
    assert any(re.match(r"my_term +D: a term a test added$", line) for line in lines)
    assert any(re.match(r"my_metric\* +mine, higher is better: a metric a test added$", line) for line in lines)
    assert any(re.match(r"kid +KID, lower is better: kernel inception distance", line) for line in lines)


def test_trial_help_lists_the_datasets_models_and_tasks_of_the_registries(scratch_registry, capsys):
    scratch_registry(data, "DATASETS")
    data.DATASETS.add("extra_dataset", data.DATASETS.get("digits"), "x")
    scratch_registry(models, "MODELS").add("extra_model", models.MODELS.get("mlp"), "x")
    scratch_registry(tasks, "TASKS")
    tasks.register("extra_task", "x")(_task)
    with pytest.raises(SystemExit):
        main(["trial", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "celeba, folder or extra_dataset (default: digits)" in text
    assert "infogan, dcgan or extra_model;" in text and "colorize or extra_task (see `gan-bench losses`)" in text


# metrics: each with its direction and display name


def test_each_metric_has_its_direction_and_display_name():
    shown = {name: (metric.display, metric.higher_is_better) for name, metric in metric_registry.METRICS.items()}
    assert shown == {"fid": ("FID", False), "kid": ("KID", False), "isc": ("IS", True),
                     "precision": ("precision", True), "recall": ("recall", True), "f_score": ("F-score", True),
                     "f1": ("F1", True), "psnr": ("PSNR (dB)", True), "ssim": ("SSIM", True),
                     "perceptual": ("perceptual distance", False)}
    objectives = [name for name, metric in metric_registry.METRICS.items() if metric.objective]
    assert objectives == ["fid", "f1", "psnr", "ssim"]


@pytest.mark.parametrize("objective, direction", [("fid", optuna.study.StudyDirection.MINIMIZE),
                                                  ("ssim", optuna.study.StudyDirection.MAXIMIZE)])
def test_a_studys_objective_is_optimised_the_way_its_metric_improves(tmp_path, objective, direction):
    study = {"name": f"way-{objective}", "datasets": [{"name": "sr", "task": "superres", "dataset": "digits"}],
             "losses": [{"name": "l1", "adversarial": "none", "g_terms": {"l1": 1.0}}], "objective": objective,
             "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 3e-3}},
             "budget": {"samples": 1, "steps": 2}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    plan = Plan(load_study(tmp_path / "s.yaml"))
    storage = prepare(plan, tmp_path)
    for part in plan.parts("search"):
        assert optuna.load_study(study_name=part.optuna_name, storage=storage).direction == direction


def test_the_best_value_and_the_reports_best_follow_the_registry(scratch_registry, tmp_path):
    best_of = metric_registry.best_of
    assert best_of("ssim", [0.2, 0.9, math.nan]) == 0.9 and best_of("fid", [30.0, 10.0]) == 10.0
    assert best_of("ssim", [math.nan]) == -math.inf and best_of("fid", []) == math.inf
    rows = pd.DataFrame([{"stage": "search", "dataset": "d", "loss": "l", "trial": t, "seed": 0, "step": 1,
                          "status": "completed", "fid": v} for t, v in enumerate([30.0, 10.0, 20.0])])
    assert report.summary(rows)["best_fid"].iloc[0] == 10.0
    flipped = dataclasses.replace(metric_registry.METRICS.get("fid"), display="higher FID", higher_is_better=True)
    scratch_registry(metric_registry, "METRICS", fid=flipped)
    scratch_registry(report, "METRICS", fid=flipped)
    assert metric_registry.best_of("fid", [30.0, 10.0]) == 30.0
    assert report.summary(rows)["best_fid"].iloc[0] == 30.0
    figure = report.plot_vs_budget(rows, tmp_path / "plot.png")
    assert figure.get_suptitle().startswith("max higher FID vs budget (higher is better)")


# `gan-bench trial`: its flags from TrialConfig


def _one_value(annotation: object) -> object:
    """int, float, str, bool, Path or a Literal (of `X | None`, X); None for a list, a dict or a nested config."""
    union = get_origin(annotation) in (Union, types.UnionType)
    options = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
    if len(options) == 1 and (options[0] in (int, float, str, bool, Path) or get_origin(options[0]) is Literal):
        return options[0]
    return None


def _trial_flags() -> dict[str, object]:
    sub = next(action for action in build_parser()._actions if action.dest == "command")
    return {option: action for action in sub.choices["trial"].with_flags()._actions for option in action.option_strings}


def test_the_trial_command_has_a_flag_for_each_scalar_field_with_its_description():
    flags = _trial_flags()
    scalars = {name: field for name, field in TrialConfig.model_fields.items() if _one_value(field.annotation)}
    assert {"dataset", "loss", "steps", "lr", "d_batchnorm", "optimizer", "seed", "amp"} <= set(scalars)
    for name, field in scalars.items():
        action = flags[f"--{name.replace('_', '-')}"]
        assert action.dest == name and action.default is None, name  # left out: the config's own default
        kind = _one_value(field.annotation)
        if get_origin(kind) is Literal:
            assert tuple(action.choices) == get_args(kind), name
        assert field.description and action.help.startswith(field.description.split("`")[0].split("None: ")[0])


def test_the_trial_flags_that_are_not_fields_are_all_there():
    flags = _trial_flags()
    for flag in ["--dataset-option", "--task", "--unpaired", "--task-option", "--eval-every", "--loss-param", "--term",
                 "--extractor", "--num-samples", "--inception-weights", "--data-root", "--out", "--no-progress",
                 "--no-d-batchnorm"]:
        assert flag in flags, flag


def test_trial_flags_reach_the_config():
    from bench.cli import _trial_config

    args = build_parser().parse_args(["trial", "--seed", "3", "--device", "cpu", "--amp", "--no-d-batchnorm",
                                      "--z-dist", "normal", "--lr", "0.001", "--num-samples", "50", "--steps", "30",
                                      "--eval-every", "20", "--term", "feature_matching=0.5"])
    config = _trial_config(args)
    assert (config.seed, config.device, config.amp, config.d_batchnorm, config.z_dist, config.lr) == (
        3, "cpu", True, False, "normal", 0.001)
    assert config.metrics.num_samples == 50 and config.eval_steps == [20, 30]
    assert config.terms == ["feature_matching"] and config.loss_params == {"w_feature_matching": 0.5}
    defaults = _trial_config(build_parser().parse_args(["trial"]))
    assert defaults == TrialConfig()  # every flag left out: the config's own defaults
