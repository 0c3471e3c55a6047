"""The `gan-bench` command."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import warnings
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bench import BenchError, EnvironmentFault

if TYPE_CHECKING:
    from bench.config import TrialConfig
    from bench.trial import TrialResult


# The MetricsConfig fields that `gan-bench trial` sets; the others keep their defaults (a study sets them all).
TRIAL_METRICS = ("extractor", "num_samples", "inception_weights")
# The metavariables of `gan-bench trial --help` that are not the field's name in capitals (nor N, every integer's).
_METAVARS = {"dataset": "NAME", "perceptual_net": "NET[:LAYER]", "inception_weights": "FILE"}


def _one_value(annotation: Any) -> Any:
    """The type of a config field that one command-line value sets: int, float, str, bool, Path or a Literal (X for
    `X | None`); None for any other (a list, a dict, a nested config)."""
    union = get_origin(annotation) in (Union, UnionType)
    types = [t for t in get_args(annotation) if t is not type(None)] if union else [annotation]
    if len(types) == 1 and (types[0] in (int, float, str, bool, Path) or get_origin(types[0]) is Literal):
        return types[0]
    return None


def _flag_fields(config: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields of `config` that `gan-bench trial` sets with a flag each: --NAME for field NAME."""
    return {name: field for name, field in config.model_fields.items() if _one_value(field.annotation) is not None}


def _one_of(names: list[str]) -> str:
    """"a, b or c"."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def _add_field_flag(parser: argparse.ArgumentParser, name: str, field: FieldInfo, flags: set[str],
                    listing: str = "") -> None:
    """--NAME, which sets the config field `name` to one value: its type, choices and help read from the field. Its
    help is the field's description, with each `field` of `flags` written as its flag --field and "None: X" (what the
    config does without a value) as "default: X", then `listing`, then the default. The parser's default is None, so
    that a flag left out leaves the config's own default."""
    from bench.config import HYPERPARAMETERS

    kind = _one_value(field.annotation)
    options: dict[str, Any] = {"default": None}
    if get_origin(kind) is Literal:
        options["choices"] = get_args(kind)
    elif kind is bool:  # a switch that is off unless given; one that the loss decides can be turned off too
        options["action"] = "store_true" if field.default is False else argparse.BooleanOptionalAction
    elif kind is int:  # a count is refused before any work unless it is positive
        positive = any(getattr(bound, "ge", 0) >= 1 or getattr(bound, "gt", -1) >= 0 for bound in field.metadata)
        options.update(type=_positive_int if positive else int, metavar="N")
    elif kind is float:
        options["type"] = float
    if name in _METAVARS:
        options["metavar"] = _METAVARS[name]
    text = re.sub(r"`(\w+)`", lambda word: f"--{word[1].replace('_', '-')}" if word[1] in flags else word[0],
                  field.description or "").replace("None: ", "default: ") + listing
    if field.default is None and name in HYPERPARAMETERS:
        text += f" ({LOSS_DEFAULT})"
    elif field.default is not None and field.default is not False and field.default is not PydanticUndefined:
        text += f" (default: {field.default})"  # not `in`: a default of 0 == False is shown
    parser.add_argument(f"--{name.replace('_', '-')}", help=text, **options)


def _add_trial_flags(trial: argparse.ArgumentParser) -> None:
    """The flags of `gan-bench trial` that make its TrialConfig, in the order of its fields: --NAME for each field
    NAME of one value, its help read from the field and the registry it names; at the place of each other field,
    the flags that give it."""
    from bench import data, models, tasks
    from bench.config import TRANSLATION_MODEL, TrialConfig
    from bench.metrics import MetricsConfig

    one_value = _flag_fields(TrialConfig)
    flags = {*one_value, *TRIAL_METRICS}
    listings = {"dataset": f": {_one_of(data.DATASETS.names())}",
                "model": f": {_one_of(models.MODELS.names())}; {TRANSLATION_MODEL} for an image-to-image --task (its "
                         "default there)"}
    for name, field in TrialConfig.model_fields.items():
        if name in one_value:
            _add_field_flag(trial, name, field, flags, listings.get(name, ""))
        elif name == "dataset_options":
            trial.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                               help="a dataset option, e.g. path=/data/faces for --dataset folder (repeatable)")
        elif name == "task":
            trial.add_argument("--task", help="an image-to-image task made from the dataset: "
                               f"{_one_of(tasks.TASKS.names())} (see `gan-bench losses`); default: unconditional "
                               "generation")
            trial.add_argument("--unpaired", action="store_true", help="train the --task without pairs (CycleGAN / "
                               "CUT); scored on the true pairs")
            trial.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                               help="an option of the --task, e.g. factor=4 for superres (repeatable)")
        elif name == "eval_steps":
            trial.add_argument("--eval-every", type=_positive_int, metavar="N",
                               help="score every N steps and at the last (default: at the last step only)")
        elif name == "loss_params":
            trial.add_argument("--loss-param", action="append", default=[], metavar="KEY=VALUE",
                               help="a custom loss's own hyperparameter (one of its keyword arguments; repeatable)")
        elif name == "terms":
            trial.add_argument("--term", action="append", default=[], metavar="NAME[=WEIGHT]",
                               help="a loss term added to G's or D's loss, weight 1 unless given, e.g. "
                                    "feature_matching=0.5 (repeatable; see `gan-bench losses`)")
        elif name == "metrics":
            for metric in TRIAL_METRICS:
                _add_field_flag(trial, metric, MetricsConfig.model_fields[metric], flags)


def _trial_config(args: argparse.Namespace) -> TrialConfig:
    from bench.config import MAX_EVALUATIONS, TrialConfig

    # A flag left out is None: the config's own default applies.
    fields = {name: getattr(args, name) for name in _flag_fields(TrialConfig)}
    if args.eval_every is not None:
        steps = args.steps if args.steps is not None else TrialConfig.model_fields["steps"].default
        if steps // args.eval_every > MAX_EVALUATIONS:  # before the list of steps is built: it may not fit
            raise BenchError(f"--eval-every: {steps // args.eval_every:,} evaluations of a {steps:,}-step "
                             f"trial; at most {MAX_EVALUATIONS:,}")
        fields["eval_steps"] = sorted(set(range(args.eval_every, steps + 1, args.eval_every)) | {steps})
    fields["dataset_options"] = _key_values(args.dataset_option, "--dataset-option")
    if args.task is not None:
        fields["task"] = {"task": args.task, "unpaired": args.unpaired,
                          "options": _key_values(args.task_option, "--task-option")}
    elif args.unpaired or args.task_option:
        raise BenchError(f"{'--unpaired' if args.unpaired else '--task-option'}: give the task with --task")
    fields["loss_params"] = _key_values(args.loss_param, "--loss-param")
    fields["terms"] = []
    for given in args.term:  # NAME or NAME=WEIGHT: the term, and its weight w_NAME (default 1)
        name, sep, _ = given.partition("=")
        fields["terms"].append(name)
        if sep:
            fields["loss_params"].update({f"w_{k}": v for k, v in _key_values([given], "--term").items()})
    metrics = {name: getattr(args, name) for name in TRIAL_METRICS}
    return TrialConfig(**{k: v for k, v in fields.items() if v is not None},
                       metrics={k: v for k, v in metrics.items() if v is not None})


def cmd_trial(args: argparse.Namespace) -> int:
    from bench.data import use_data_root
    from bench.io import folder_name
    from bench.results_folder import check_writable
    from bench.trial import PackMember, run_trial, run_trials

    use_data_root(args.data_root)
    config = _trial_config(args)
    if args.out is None:
        digest = hashlib.sha1(json.dumps(config.resolved().model_dump(mode="json"), sort_keys=True).encode())
        out = Path("results") / "trials" / folder_name(f"{config.dataset}-{config.loss}-{digest.hexdigest()[:8]}")
    else:
        out = Path(args.out)
    check_writable(out, "--out")
    if args.pack == 1:
        return _report_trial(config, out, run_trial(config, out, progress=not args.no_progress))
    members = [PackMember(config.model_copy(update={"seed": config.seed + i}), out / f"seed-{config.seed + i}")
               for i in range(args.pack)]
    results = run_trials(members, progress=not args.no_progress)
    codes = []
    for member, result in zip(members, results):
        if isinstance(result, Exception):
            print(f"\nseed {member.config.seed}: failed: {type(result).__name__}: {result}", file=sys.stderr)
            codes.append(1)
        else:
            print(f"\nseed {member.config.seed}:", end="")
            codes.append(_report_trial(member.config, member.out_dir, result))
    return max(codes)


def _report_trial(config: TrialConfig, out: Path, result: TrialResult) -> int:
    import pandas as pd

    on = f"{config.dataset} ({config.task.label})" if config.task else config.dataset
    print(f"\n{config.loss} on {on}: {result.status} after {result.steps_done} steps "
          f"({result.steps_per_second:.1f} steps/s); metrics by feature extractor {result.extractor}")
    if result.rows:
        print(pd.DataFrame(result.rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"outputs: {out}/ (result.json, config.json, checkpoint.pt, samples.png)")
    return 0 if result.status == "completed" else 1


def cmd_losses(args: argparse.Namespace) -> int:
    from bench import losses, tasks, terms
    from bench.metric_registry import METRICS

    for name, spec in losses.LOSSES.items():
        defaults = ", ".join(f"{k} {v}" for k, v in spec.defaults.items())
        print(f"{name:10} {losses.LOSSES.description(name)}" + (f" (defaults: {defaults})" if defaults else ""))
    print(f"{'MODULE:FN':10} a custom loss: imports the module and calls FN(real_scores, fake_scores, **its own "
          "keyword arguments), which --loss-param sets")
    print("\nterms, added to a loss with weight w_<term> (--term NAME[=WEIGHT]; in a study, a composite loss's "
          "g_terms / d_terms):")
    for name, term in terms.TERMS.items():
        print(f"{name:18} {term.acts_on.upper()}: {terms.TERMS.description(name)}")
    print("\nimage-to-image tasks (a study's dataset entry {name, task, dataset, unpaired, options}; trial --task):")
    for name, task in tasks.TASKS.items():
        options = ", ".join(f"{k} {v}" for k, v in task.options.items())
        print(f"{name:18} {tasks.TASKS.description(name)}" + (f" (options: {options})" if options else ""))
    print("\nmetrics of the result rows (a study's objective: one marked *; metrics.extra: a custom one, "
          "package.module:function):")
    for name, metric in METRICS.items():
        direction = "higher is better" if metric.higher_is_better else "lower is better"
        print(f"{name + ('*' if metric.objective else ''):18} {metric.display}, {direction}: "
              f"{METRICS.description(name)}")
    return 0


def _results_dir(study, args: argparse.Namespace) -> Path:
    return Path(args.results) if args.results else Path("results") / study.name


def _check_storage(study, study_file: str) -> None:
    """Connects once to the study's database, so that a server that cannot be reached (or a SQLite file in a missing
    folder) is one line before the results folder is made, not a traceback after it."""
    if study.storage is None:
        return
    from bench.results_folder import check_writable
    from bench.study import JOURNAL_URL

    if study.storage.startswith(JOURNAL_URL):  # a journal file: its folder must be there and writable
        journal = Path(study.storage[len(JOURNAL_URL):])
        check_writable(journal.parent, f"{study_file}: storage")
        if journal.is_dir():
            raise BenchError(f"{study_file}: storage: {journal} is a folder; name a journal file")
        return
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(study.storage)
    try:
        engine.connect().close()
    except SQLAlchemyError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise BenchError(f"{study_file}: storage: cannot connect to "
                         f"{engine.url.render_as_string(hide_password=True)} ({reason})") from None
    finally:
        engine.dispose()


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.executors import EXECUTORS
    from bench.plan import Plan
    from bench.study import load_study

    study = load_study(Path(args.study))
    EXECUTORS.get(study.executor.name)  # an executor of one's own is imported (and checked) here, as a run would
    plan = Plan(study)
    search = plan.parts("search")
    print(f"{args.study}: valid study {study.name!r}: {len(search)} (dataset, loss) pairs, "
          f"{sum(p.trials for p in search)} search trials of {_steps(study)} steps, "
          f"{len(study.seeds)} seed(s) each, sampler {study.sampler.name}, executor {study.executor.name}")
    if "confirm" in study.stages:
        confirm = plan.parts("confirm")
        print(f"  then a confirm stage: the best configuration of each pair with {study.confirm.runs} seeds "
              f"({sum(p.trials for p in confirm)} trials)")
    for part in plan.parts():
        print(f"  {part.stage:8} {part.dataset:14} {part.loss:12} {part.trials} trials")
    unit = {"d_steps": "D updates (the paper's count)", "g_steps": "G updates"}[study.budget.count]
    print(f"  a step is one of the {unit}; updates per trial:")
    for dataset in study.datasets:
        steps = study.budget.steps_for(dataset)
        per_n = ", ".join(f"n_disc {n}: {n_d:,} D / {n_g:,} G" for n, n_d, n_g in _updates(study, steps))
        print(f"    {dataset:14} {steps:,} steps: {per_n}")
    return 0


def _updates(study, steps: int) -> list[tuple[int, int, int]]:
    """(n_disc, D updates, G updates) for every n_disc a trial of the study can have (searched, fixed or default)."""
    from bench import losses
    from bench.plan import default_sample, distributions
    from bench.config import FALLBACK_DEFAULTS, g_updates

    values = set()
    for loss in study.losses:
        spec = losses.get(study.base_loss(loss))
        if spec.discriminator in ("encoder", "none"):
            continue  # the VAE updates encoder and decoder together, loss none has no D: n_disc does not apply
        space, fixed = distributions(study, loss), study.fixed_params(loss)
        if "n_disc" in space:
            d = space["n_disc"]
            values |= set(d.choices) if hasattr(d, "choices") else set(range(d.low, d.high + 1))
        else:
            values.add(fixed.get("n_disc", spec.defaults.get("n_disc", FALLBACK_DEFAULTS["n_disc"])))
        if study.defaults:  # the default sample may lie outside the space (WGAN's n_disc 5 in the narrow one)
            params, overrides = default_sample(study, loss)
            if "n_disc" in {**params, **overrides}:
                values.add({**params, **overrides}["n_disc"])
    out = []
    for n in sorted(values):
        g = g_updates(study.budget.count, steps, n)
        out.append((n, steps if study.budget.count == "d_steps" else steps * n, g))
    return out


def _steps(study) -> str:
    steps = study.budget.steps
    return " / ".join(f"{d}: {n:,}" for d, n in steps.items()) if isinstance(steps, dict) else f"{steps:,}"


def _executor(study, args: argparse.Namespace):
    """The study's executor, or the kind --executor names (with that kind's defaults), with --workers over its own
    count."""
    from bench.executors import EXECUTORS

    name = args.executor or study.executor.name
    kind = EXECUTORS.get(name)
    if args.detach and not kind.detaches:
        can = " or ".join(n for n, k in EXECUTORS.items() if k.detaches)
        raise BenchError(f"--detach: only a {can} study can detach (executor {can}, or --executor {can})")
    settings = study.executor if name == study.executor.name else kind.defaults(study, args.workers)
    return kind(settings, args.workers)


def _stages(study, args: argparse.Namespace) -> list[str]:
    if args.stage is None:
        return study.stages
    if args.stage not in study.stages:
        raise BenchError(f"--stage: the study has no {args.stage} stage; its stages: {', '.join(study.stages)}")
    return [args.stage]


def cmd_run(args: argparse.Namespace) -> int:
    from bench import data, prefetch, report, results_folder
    from bench.confirm import check_confirm_source
    from bench.plan import Plan
    from bench.storage import check_ownership, open_storage
    from bench.study import load_study
    from bench.tallies import counts

    study = load_study(Path(args.study))
    stages = _stages(study, args)
    executor = _executor(study, args)
    executor.check()  # before anything is written or submitted
    results_dir = _results_dir(study, args)
    results_folder.check_writable(results_dir, "--results")
    results_folder.check_results_dir(study, results_dir)
    if results_folder.driver_running(results_dir):  # said at once, before the data and storage checks
        raise BenchError(results_folder.second_driver(results_dir))
    if "confirm" in stages and study.confirm.source is not None:
        check_confirm_source(study)
    data.use_data_root(args.data_root or study.data_root)
    prefetch.check(study, args.study)
    _check_storage(study, args.study)
    check_ownership(study, results_dir)  # another study of this name in the storage: refused before any work
    prefetch.prepare(study, download=False, log=lambda line: None)
    results_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(study)
    with results_folder.driving(results_dir):  # before study.yaml: a second driver must not rewrite the first one's
        results_folder.write_study(results_dir, study)
        _warn_space(plan, results_dir, stages, executor.worker_count())
        for stage in stages:
            cancel = executor.run(plan, results_dir, stage, progress=not args.no_progress,
                                  retry_failed=args.retry_failed, detach=args.detach)
            if cancel is not None:  # detached: its workers run on
                later = " (then run this command again for the next stage)" if stage != stages[-1] else ""
                print(f"detached: follow with `gan-bench status {results_dir} --wait`{later}; {cancel}")
                return 0
        print(counts(plan, open_storage(study, results_dir)).to_string(index=False))
        paths = report.write_report(results_dir)
    print(f"results: {results_dir / results_folder.RESULTS_FILE}\nreport:  " + "\n         ".join(str(p) for p in paths))
    return 0


def _warn_space(plan, results_dir: Path, stages: list[str], workers: int) -> None:
    """One line on stderr if the results folder has less space free than the run needs (about)."""
    import shutil

    from bench.io import human_bytes
    from bench.storage import open_storage
    from bench.tallies import space_needed

    needed, trials = space_needed(plan, open_storage(plan.study, results_dir), stages, workers)
    free = shutil.disk_usage(results_dir).free
    if free < needed:
        print(f"gan-bench: warning: {results_dir} has {human_bytes(free)} free, and this run needs about "
              f"{human_bytes(needed)} (checkpoints, samples and results of {trials} trials); it stops when the disk "
              "is full, and the same command resumes it once space is freed", file=sys.stderr, flush=True)


def _key_values(values: list[str], flag: str) -> dict[str, Any]:
    """Repeated `flag KEY=VALUE` arguments as a dict, each value read as YAML (as a study file's would be)."""
    import yaml

    options = {}
    for option in values:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise BenchError(f"{flag}: expected KEY=VALUE, got {option!r}")
        options[key] = yaml.safe_load(value)
    return options


def cmd_prefetch(args: argparse.Namespace) -> int:
    from bench import data, prefetch

    named = bool(args.dataset) or args.inception or bool(args.vgg)
    if (args.study is None) != named:
        raise BenchError("prefetch: give either a study file or --dataset NAME / --inception / --vgg NET"
                         + (", not both" if named else ""))
    if (args.dataset_option or args.image_size is not None) and not args.dataset:
        raise BenchError("--dataset-option, --image-size: only with --dataset (a study sets its own)")
    if args.study is None:
        data.use_data_root(args.data_root)
        options = _key_values(args.dataset_option, "--dataset-option")
        prefetch.fetch(args.dataset, options, args.image_size, args.inception, args.vgg)
        print("everything is in place; `gan-bench trial` can use it offline")
        return 0
    from bench.study import load_study

    study = load_study(Path(args.study))
    data.use_data_root(args.data_root or study.data_root)
    prefetch.prepare(study, download=True)
    print(f"{args.study}: everything is in place; compute nodes can run the study offline")
    return 0


def _saved_study(results_dir: Path):
    """The study of a results folder, checked to own its name in its storage: its tables show its own trials only."""
    from bench.results_folder import STUDY_FILE, read_study
    from bench.storage import check_ownership

    if not (results_dir / STUDY_FILE).is_file():
        raise BenchError(f"{results_dir}: not a results folder (no {STUDY_FILE})")
    study = read_study(results_dir)
    check_ownership(study, results_dir)
    return study


def cmd_status(args: argparse.Namespace) -> int:
    from bench import executors, report
    from bench.plan import Plan
    from bench.storage import open_storage
    from bench.tallies import counts, failures, results_table

    results_dir = Path(args.results_dir)
    study = _saved_study(results_dir)
    plan = Plan(study)
    if args.wait:
        # A detached run (a SLURM array), or a run in another terminal (every stage while its driver runs).
        following = executors.in_progress(results_dir)
        if following is not None:
            stage, running = following
            executors.follow(plan, results_dir, stage, running, progress=True)
        else:
            print(f"{results_dir}: no run is in progress", file=sys.stderr)
        if not results_table(plan, open_storage(study, results_dir)).empty:
            report.write_report(results_dir)
    storage = open_storage(study, results_dir)
    table = counts(plan, storage)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for line in failures(plan, storage):
        print(f"failed: {line}")
    if int(table["failed"].sum()):
        print("`gan-bench run STUDY.yaml --retry-failed` queues the failed trials again")
    stale = int(table["stale"].sum())
    if stale:
        print(f"{stale} trials are stale (their worker is gone); `gan-bench run` on this study queues them again")
    for line in executors.status_lines(results_dir):
        print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report
    from bench.results_folder import STUDY_FILE

    results_dir = Path(args.results_dir)
    try:
        paths = report.write_report(results_dir, args.reference)
    except report.DamagedResults as error:
        if not (results_dir / STUDY_FILE).is_file():
            raise BenchError(f"{error}; no {STUDY_FILE} beside it to rebuild it from") from None
        # Imported here only: they load torch and optuna, which a report of an intact results.csv does without.
        from bench.plan import Plan
        from bench.storage import open_storage
        from bench.tallies import write_results

        # results.csv is only a view of the study's storage, which keeps every finished trial: write it again.
        study = _saved_study(results_dir)
        write_results(Plan(study), open_storage(study, results_dir), results_dir)
        print(f"gan-bench: {error}; rebuilt it from the study's storage", file=sys.stderr)
        paths = report.write_report(results_dir, args.reference)
    for path in paths:
        print(path)
    return 0


LOSS_DEFAULT = "default: the loss's, see `gan-bench losses`"
DATA_ROOT_DEFAULT = "$GAN_BENCH_DATA, else ~/.cache/gan-bench/data"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: VALUE)" to every option that has a value by default. An option whose default is None (the
    loss, the dataset or the study decides) says in its help what happens without it, rather than "(default:
    None)"; a flag that is off unless given, or a repeatable option that starts empty, needs no default shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:  # not `in`: 0 == False
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as every other bad input is reported: one line `gan-bench: error: --flag: what is
    expected`, exit code 2, instead of argparse's usage block followed by `argument --flag: ...`.

    `flags(parser)`, if given, adds the flags that read the registries, on the parser's first use: they load torch
    and the trial code, which `gan-bench --help` and the other commands need not wait for."""

    def __init__(self, *args: Any, flags: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flags = flags

    def with_flags(self) -> _Parser:
        if self._flags is not None:
            flags, self._flags = self._flags, None
            flags(self)
        return self

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.with_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.with_flags()
        return super().format_help()

    def format_usage(self) -> str:
        self.with_flags()
        return super().format_usage()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gan-bench: error: {message.removeprefix('argument ')} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    """argparse type of a count (steps, workers, batch size, ...): 0 or less is a mistake, refused before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _VersionAction(argparse.Action):
    """--version: gan-bench's version and those of the libraries and Python that make its numbers, on one line.
    They are imported only here, so that parsing and --help stay fast."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from bench.device import versions

        found = versions()
        names = {"torch_fidelity": "torch-fidelity", "python": "Python"}
        others = ", ".join(f"{names.get(name, name)} {version}" for name, version in found.items()
                           if name != "gan_bench")
        print(f"gan-bench {found['gan_bench']} ({others})")
        parser.exit()


def _executor_flag(run: argparse.ArgumentParser) -> None:
    from bench.executors import EXECUTORS

    run.add_argument("--executor", choices=EXECUTORS.names(), help="run on this executor, with its defaults "
                                                                  "(default: the study's)")


def _trial_command_flags(trial: argparse.ArgumentParser) -> None:
    _add_trial_flags(trial)
    trial.add_argument("--data-root", metavar="DIR", help=f"raw datasets and their caches (default: "
                                                          f"{DATA_ROOT_DEFAULT})")
    trial.add_argument("--out", metavar="DIR", help="output folder (default: results/trials/DATASET-LOSS-CONFIGHASH)")
    trial.add_argument("--no-progress", action="store_true", help="no progress bar")
    trial.add_argument("--pack", type=_positive_int, default=1, metavar="K",
                       help="train K seeds of the configuration at once in this process (--seed, --seed + 1, ...), "
                            "each in OUT/seed-N (default: 1, in OUT)")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: argparse would otherwise take a prefix for the option it starts (`--worker 1`
    # as `--workers 1`, `--n-dis` as `--n-disc`), so a typo would run a study other than the one meant.
    options = {"allow_abbrev": False, "formatter_class": _HelpFormatter}
    parser = _Parser(prog="gan-bench", description=__doc__, **options)
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of gan-bench, torch, torchvision, torch-fidelity, optuna and Python")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, description: str | None = None,
                flags: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description or summary, flags=flags, **options)

    trial = command("trial", "train and score one configuration", flags=_trial_command_flags)
    trial.set_defaults(func=cmd_trial)

    run = command("run", "run (or continue) a study", flags=_executor_flag)
    run.add_argument("study", help="a study YAML file")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="worker processes or SLURM array tasks (default: the study's executor.workers)")
    run.add_argument("--results", metavar="DIR", help="results folder (default: results/STUDY_NAME)")
    run.add_argument("--detach", action="store_true", help="SLURM: submit and return; follow with `gan-bench status "
                                                           "RESULTS --wait`")
    run.add_argument("--stage", choices=["search", "confirm"], help="run one stage (default: all of the study's)")
    run.add_argument("--data-root", metavar="DIR", help=f"raw datasets and their caches (default: the study's "
                                                        f"data_root, else {DATA_ROOT_DEFAULT})")
    run.add_argument("--retry-failed", action="store_true",
                     help="queue the failed trials again, whatever they failed of (see `gan-bench status`); trials "
                          "that failed for their machine (a full disk) are queued again without it")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    fetch = command("prefetch", "download datasets and Inception and VGG weights (on a machine with internet)",
                    "download datasets and Inception and VGG weights and build the caches and real-data features (on a "
                    "machine with internet, so that others can run offline): those of a study, or those that "
                    "--dataset, --inception and --vgg name")
    fetch.add_argument("study", nargs="?", help="a study YAML file: fetch everything it uses")
    fetch.add_argument("--dataset", action="append", default=[], metavar="NAME",
                       help="instead of a study: a dataset to fetch, with its domain extractor and real features "
                            "where it has classes (repeatable)")
    fetch.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of every --dataset, as for `gan-bench trial` (repeatable)")
    fetch.add_argument("--image-size", type=_positive_int, metavar="N", help="image side of the caches (default: each "
                                                                   "dataset's)")
    fetch.add_argument("--inception", action="store_true",
                       help="instead of a study: torch-fidelity's Inception weights, where `gan-bench trial "
                            "--extractor inception` looks for them")
    fetch.add_argument("--vgg", action="append", default=[], choices=["vgg16", "vgg19"],
                       help="instead of a study: torchvision's ImageNet weights of this VGG, where `gan-bench trial "
                            "--perceptual-net` looks for them (repeatable)")
    fetch.add_argument("--data-root", metavar="DIR", help=f"where to put the datasets (default: the study's data_root, "
                                                          f"else {DATA_ROOT_DEFAULT})")
    fetch.set_defaults(func=cmd_prefetch)

    validate = command("validate", "check a study file and print its plan")
    validate.add_argument("study", help="a study YAML file")
    validate.set_defaults(func=cmd_validate)

    status = command("status", "trials done / running / failed / diverged per (dataset, loss)")
    status.add_argument("results_dir", help="a study's results folder")
    status.add_argument("--wait", action="store_true", help="follow a detached SLURM run until its tasks end")
    status.set_defaults(func=cmd_status)

    reporting = command("report", "summary tables and the FID-vs-budget plot from results.csv")
    reporting.add_argument("results_dir", help="a study's results folder")
    reporting.add_argument("--reference", type=Path, metavar="CSV",
                           help="the paper's table as CSV (model, dataset, fid_mean, fid_std) (default: "
                                "reference/lucic2018_best_fid.csv beside the results folder, else gan-bench's own)")
    reporting.set_defaults(func=cmd_report)

    listing = command("losses", "list the registered losses, loss terms and image-to-image tasks")
    listing.set_defaults(func=cmd_losses)
    return parser


class Terminated(BaseException):
    """SIGTERM (`kill PID`, a batch system), raised where the program is, so that it stops as a Ctrl-C does."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


# What an interrupted command leaves, for the one line it prints.
RESUME = {
    "run": "finished trials are saved and running ones go back to the queue; run the same command again to resume",
    "trial": "its last checkpoint is kept; run the same command again to resume from it",
}


# After an environment fault (bench.EnvironmentFault: a full disk, an I/O error, a lost database) the same command may
# succeed once its cause is gone.
RESUME_LATER = "nothing half-written is left; run the same command again once the cause is fixed"
STOPPED = {
    "run": "finished trials are saved, and the trials that were running are queued again (now, or by the next run if "
           "the storage refused it) with none marked failed; fix the cause (free space, bring the folder or database "
           "back), then run the same command again to resume",
    "trial": "its last checkpoint is kept; fix the cause (free space, bring the folder back), then run the same command "
             "again to resume",
}


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `gan-bench validate x.yaml | head` ends quietly
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    previous = signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs with SIGINT ignored, and Python then never turns it into KeyboardInterrupt:
    # `kill -INT PID` to the driver must still stop it as Ctrl-C does.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.func(args)
    except ValidationError as error:
        from bench.study import validation_message

        print(f"gan-bench: error: {validation_message(error)}", file=sys.stderr)
    except BenchError as error:
        print(f"gan-bench: error: {error}", file=sys.stderr)
    except Exception as error:  # a full disk, an I/O error, a lost database: one line and 75, not a traceback and 1
        from bench.io import environment_fault

        fault = environment_fault(error)
        if fault is None:
            raise
        print(f"gan-bench: error: stopped, the machine failed: {fault}; {STOPPED.get(args.command, RESUME_LATER)}",
              file=sys.stderr)
        return EnvironmentFault.exit_code
    except (KeyboardInterrupt, Terminated) as stop:
        name, code = ("SIGINT", 130) if isinstance(stop, KeyboardInterrupt) else ("SIGTERM", 143)
        print(f"\ngan-bench: interrupted ({name}); {RESUME.get(args.command, 'nothing half-written is left')}",
              file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return 2


if __name__ == "__main__":
    sys.exit(main())
