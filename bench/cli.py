"""The `gan-bench` command."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from bench import BenchError, EnvironmentFault


def _trial_config(args: argparse.Namespace):
    from bench.config import MAX_EVALUATIONS, TrialConfig

    fields = {name: getattr(args, name) for name in (
        "dataset", "image_size", "loss", "steps", "batch_size", "z_dim", "z_dist", "lr", "beta1", "beta2",
        "n_disc", "gp_lambda", "clip", "began_gamma", "began_lambda_k", "r1_gamma", "d_batchnorm", "optimizer", "init",
        "count", "seed", "device", "threads", "amp", "perceptual_net")}
    if args.eval_every is not None:
        if args.steps // args.eval_every > MAX_EVALUATIONS:  # before the list of steps is built: it may not fit
            raise BenchError(f"--eval-every: {args.steps // args.eval_every:,} evaluations of a {args.steps:,}-step "
                             f"trial; at most {MAX_EVALUATIONS:,}")
        fields["eval_steps"] = sorted(set(range(args.eval_every, args.steps + 1, args.eval_every)) | {args.steps})
    fields["dataset_options"] = _key_values(args.dataset_option, "--dataset-option")
    if args.task is not None:
        fields["task"] = {"task": args.task, "unpaired": args.unpaired,
                          "options": _key_values(args.task_option, "--task-option")}
    elif args.unpaired or args.task_option:
        raise BenchError(f"{'--unpaired' if args.unpaired else '--task-option'}: give the task with --task")
    fields["model"] = args.model
    fields["loss_params"] = _key_values(args.loss_param, "--loss-param")
    fields["terms"] = []
    for given in args.term:  # NAME or NAME=WEIGHT: the term, and its weight w_NAME (default 1)
        name, sep, _ = given.partition("=")
        fields["terms"].append(name)
        if sep:
            fields["loss_params"].update({f"w_{k}": v for k, v in _key_values([given], "--term").items()})
    metrics = {"extractor": args.extractor, "num_samples": args.num_samples, "inception_weights": args.inception_weights}
    return TrialConfig(**{k: v for k, v in fields.items() if v is not None},
                       metrics={k: v for k, v in metrics.items() if v is not None})


def cmd_trial(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.prefetch import use_data_root
    from bench.config import folder_name
    from bench.trial import run_trial

    use_data_root(args.data_root)
    config = _trial_config(args)
    if args.out is None:
        digest = hashlib.sha1(json.dumps(config.resolved().model_dump(mode="json"), sort_keys=True).encode())
        out = Path("results") / "trials" / folder_name(f"{config.dataset}-{config.loss}-{digest.hexdigest()[:8]}")
    else:
        out = Path(args.out)
    _check_writable(out, "--out")
    result = run_trial(config, out, progress=not args.no_progress)
    on = f"{config.dataset} ({config.task.label})" if config.task else config.dataset
    print(f"\n{config.loss} on {on}: {result.status} after {result.steps_done} steps "
          f"({result.steps_per_second:.1f} steps/s); metrics by feature extractor {result.extractor}")
    if result.rows:
        print(pd.DataFrame(result.rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"outputs: {out}/ (result.json, config.json, checkpoint.pt, samples.png)")
    return 0 if result.status == "completed" else 1


def cmd_losses(args: argparse.Namespace) -> int:
    from bench import losses, tasks, terms

    for name in losses.names():
        spec = losses.get(name)
        defaults = ", ".join(f"{k} {v}" for k, v in spec.defaults.items())
        print(f"{name:10} {spec.description}" + (f" (defaults: {defaults})" if defaults else ""))
    print(f"{'MODULE:FN':10} a custom loss: imports the module and calls FN(real_scores, fake_scores, **its own "
          "keyword arguments), which --loss-param sets")
    print("\nterms, added to a loss with weight w_<term> (--term NAME[=WEIGHT]; in a study, a composite loss's "
          "g_terms / d_terms):")
    for term in terms.TERMS.values():
        print(f"{term.name:18} {term.acts_on.upper()}: {term.description}")
    print("\nimage-to-image tasks (a study's dataset entry {name, task, dataset, unpaired, options}; trial --task):")
    for task in tasks.TASKS.values():
        options = ", ".join(f"{k} {v}" for k, v in task.options.items())
        print(f"{task.name:18} {task.description}" + (f" (options: {options})" if options else ""))
    return 0


def _results_dir(study, args: argparse.Namespace) -> Path:
    return Path(args.results) if args.results else Path("results") / study.name


def _check_writable(folder: Path, flag: str) -> None:
    """Refuses, before any work, an output folder that cannot be made: a file in its place, or a nearest existing
    folder this user cannot write in. Tried for real with a probe file, since os.access says yes to root on a
    read-only file system and knows nothing of ACLs or quotas."""
    import tempfile

    existing = folder
    try:
        # The folder itself if it exists, else the ancestor that mkdir would write in (`.` if the working folder is
        # gone: the probe then fails).
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            what = "is a file" if existing == folder else f"is inside {existing}, a file"
            raise BenchError(f"{folder}: {what}, not a folder; choose another folder with {flag}")
        descriptor, probe = tempfile.mkstemp(prefix=".gan-bench-probe-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise BenchError(f"{folder}: cannot write in {existing} ({error.strerror}); choose another folder with "
                         f"{flag}") from None


def _check_storage(study, study_file: str) -> None:
    """Connects once to the study's database, so that a server that cannot be reached (or a SQLite file in a missing
    folder) is one line before the results folder is made, not a traceback after it."""
    if study.storage is None:
        return
    from bench.study import JOURNAL_URL

    if study.storage.startswith(JOURNAL_URL):  # a journal file: its folder must be there and writable
        journal = Path(study.storage[len(JOURNAL_URL):])
        _check_writable(journal.parent, f"{study_file}: storage")
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
    from bench.study import load_study

    study = load_study(Path(args.study))
    search = study.plan("search")
    print(f"{args.study}: valid study {study.name!r}: {len(search)} (dataset, loss) pairs, "
          f"{sum(p.trials for p in search)} search trials of {_steps(study)} steps, "
          f"{len(study.seeds)} seed(s) each, sampler {study.sampler.name}, executor {study.executor.name}")
    if "confirm" in study.stages:
        confirm = study.plan("confirm")
        print(f"  then a confirm stage: the best configuration of each pair with {study.confirm.runs} seeds "
              f"({sum(p.trials for p in confirm)} trials)")
    for part in study.plan():
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
    from bench.runner import default_sample, distributions
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
    """The study's executor, or the other kind if --executor asks for it (with that kind's defaults)."""
    from bench.study import LocalExecutor, SlurmExecutor

    executor = study.executor
    if args.executor == "slurm" and not isinstance(executor, SlurmExecutor):
        executor = SlurmExecutor(name="slurm", workers=args.workers or executor.workers, cpus_per_task=study.threads)
    elif args.executor == "local" and not isinstance(executor, LocalExecutor):
        executor = LocalExecutor(workers=args.workers or 1)
    elif args.workers and isinstance(executor, SlurmExecutor):
        executor = executor.model_copy(update={"workers": args.workers})
    if args.detach and not isinstance(executor, SlurmExecutor):
        raise BenchError("--detach: only a SLURM study can detach (executor slurm, or --executor slurm)")
    return executor


def _stages(study, args: argparse.Namespace) -> list[str]:
    if args.stage is None:
        return study.stages
    if args.stage not in study.stages:
        raise BenchError(f"--stage: the study has no {args.stage} stage; its stages: {', '.join(study.stages)}")
    return [args.stage]


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from bench import executors, prefetch, report, runner
    from bench.io import atomic_write_text
    from bench.study import SlurmExecutor, load_study

    study = load_study(Path(args.study))
    stages = _stages(study, args)
    executor = _executor(study, args)
    if isinstance(executor, SlurmExecutor):
        executors.check_slurm(executor)  # before anything is written or submitted
    results_dir = _results_dir(study, args)
    _check_writable(results_dir, "--results")
    runner.check_results_dir(study, results_dir)
    if executors.driver_running(results_dir):  # said at once, before the data and storage checks
        raise BenchError(executors.second_driver(results_dir))
    if "confirm" in stages and study.confirm.source is not None:
        runner.check_confirm_source(study)
    prefetch.use_data_root(args.data_root or study.data_root)
    prefetch.check(study, args.study)
    _check_storage(study, args.study)
    runner.check_ownership(study, results_dir)  # another study of this name in the storage: refused before any work
    prefetch.prepare(study, download=False, log=lambda line: None)
    results_dir.mkdir(parents=True, exist_ok=True)
    with executors.driving(results_dir):  # before study.yaml: a second driver must not rewrite the first one's
        atomic_write_text(results_dir / "study.yaml", yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
        _warn_space(study, results_dir, stages, args.workers or executor.workers)
        if isinstance(executor, SlurmExecutor):
            for stage in stages:
                if executors.stage_finished(study, results_dir, stage):
                    continue
                job_id = executors.run_slurm(study, results_dir, stage, executor, args.detach, not args.no_progress,
                                             args.retry_failed)
                if args.detach:
                    later = " (then run this command again for the next stage)" if stage != stages[-1] else ""
                    print(f"detached: follow with `gan-bench status {results_dir} --wait`{later}; "
                          f"cancel with `scancel {job_id}`")
                    return 0
        else:
            for stage in stages:
                executors.run_local(study, results_dir, stage, args.workers, progress=not args.no_progress,
                                    retry_failed=args.retry_failed)
        print(runner.counts(study, runner.open_storage(study, results_dir)).to_string(index=False))
        paths = report.write_report(results_dir)
    print(f"results: {results_dir / 'results.csv'}\nreport:  " + "\n         ".join(str(p) for p in paths))
    return 0


def _warn_space(study, results_dir: Path, stages: list[str], workers: int) -> None:
    """One line on stderr if the results folder has less space free than the run needs (about)."""
    import shutil

    from bench import runner
    from bench.io import human_bytes

    needed, trials = runner.space_needed(study, runner.open_storage(study, results_dir), stages, workers)
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
    from bench import prefetch

    named = bool(args.dataset) or args.inception or bool(args.vgg)
    if (args.study is None) != named:
        raise BenchError("prefetch: give either a study file or --dataset NAME / --inception / --vgg NET"
                         + (", not both" if named else ""))
    if (args.dataset_option or args.image_size is not None) and not args.dataset:
        raise BenchError("--dataset-option, --image-size: only with --dataset (a study sets its own)")
    if args.study is None:
        prefetch.use_data_root(args.data_root)
        options = _key_values(args.dataset_option, "--dataset-option")
        prefetch.fetch(args.dataset, options, args.image_size, args.inception, args.vgg)
        print("everything is in place; `gan-bench trial` can use it offline")
        return 0
    from bench.study import load_study

    study = load_study(Path(args.study))
    prefetch.use_data_root(args.data_root or study.data_root)
    prefetch.prepare(study, download=True)
    print(f"{args.study}: everything is in place; compute nodes can run the study offline")
    return 0


def _saved_study(results_dir: Path):
    """The study of a results folder, checked to own its name in its storage: its tables show its own trials only."""
    from bench import runner
    from bench.study import load_study

    if not (results_dir / "study.yaml").is_file():
        raise BenchError(f"{results_dir}: not a results folder (no study.yaml)")
    study = load_study(results_dir / "study.yaml")
    runner.check_ownership(study, results_dir)
    return study


def cmd_status(args: argparse.Namespace) -> int:
    from bench import executors, report, runner

    results_dir = Path(args.results_dir)
    study = _saved_study(results_dir)
    jobs = executors.submitted_jobs(results_dir)
    if args.wait:
        if jobs and executors.array_active(jobs[-1]["job_id"]):  # re-attach to a detached SLURM run
            job = jobs[-1]
            executors.follow(study, results_dir, job["stage"], lambda: executors.array_active(job["job_id"]),
                             progress=True)
        elif executors.driver_running(results_dir):  # a local run in another terminal: follow every stage
            executors.follow(study, results_dir, None, lambda: executors.driver_running(results_dir), progress=True)
        else:
            print(f"{results_dir}: no run is in progress", file=sys.stderr)
        if not runner.results_table(study, runner.open_storage(study, results_dir)).empty:
            report.write_report(results_dir)
    storage = runner.open_storage(study, results_dir)
    table = runner.counts(study, storage)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for line in runner.failures(study, storage):
        print(f"failed: {line}")
    if int(table["failed"].sum()):
        print("`gan-bench run STUDY.yaml --retry-failed` queues the failed trials again")
    stale = int(table["stale"].sum())
    if stale:
        print(f"{stale} trials are stale (their worker is gone); `gan-bench run` on this study queues them again")
    for job in jobs:
        active = executors.active_tasks(job["job_id"])
        ended = ", ".join(f"{n} {state}" for state, n in executors.task_states(job["job_id"]).items())
        print(f"SLURM array job {job['job_id']} ({job['stage']}, {job['tasks']} tasks): {active} queued or running"
              f"{'; ' + ended if ended else ''}; logs in {job['log_dir']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report, runner

    results_dir = Path(args.results_dir)
    try:
        paths = report.write_report(results_dir, args.reference)
    except report.DamagedResults as error:
        if not (results_dir / "study.yaml").is_file():
            raise BenchError(f"{error}; no study.yaml beside it to rebuild it from") from None
        # results.csv is only a view of the study's storage, which keeps every finished trial: write it again.
        study = _saved_study(results_dir)
        runner.write_results(study, runner.open_storage(study, results_dir), results_dir)
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
    expected`, exit code 2, instead of argparse's usage block followed by `argument --flag: ...`."""

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


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: argparse would otherwise take a prefix for the option it starts (`--worker 1`
    # as `--workers 1`, `--n-dis` as `--n-disc`), so a typo would run a study other than the one meant.
    options = {"allow_abbrev": False, "formatter_class": _HelpFormatter}
    parser = _Parser(prog="gan-bench", description=__doc__, **options)
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of gan-bench, torch, torchvision, torch-fidelity, optuna and Python")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description or summary, **options)

    trial = command("trial", "train and score one configuration")
    trial.add_argument("--dataset", default="digits", metavar="NAME",
                       help="digits, mnist5k, polygons, mnist, fashion_mnist, cifar10, celeba or folder")
    trial.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a dataset option, e.g. path=/data/faces for --dataset folder (repeatable)")
    trial.add_argument("--loss", default="ns_gan", help="a name from `gan-bench losses`, or package.module:function")
    trial.add_argument("--steps", type=_positive_int, default=500, metavar="N",
                       help="training steps, counted as --count says")
    trial.add_argument("--count", choices=["g_steps", "d_steps"],
                       help="what a step is: g_steps: n_disc D updates and one G update; d_steps (the paper's): one "
                            "D update, with G updated on the first and every n_disc-th (default: g_steps)")
    trial.add_argument("--model", help="mlp, infogan or dcgan (default: mlp); unet for an image-to-image --task "
                       "(its default there)")
    trial.add_argument("--task", help="an image-to-image task made from the dataset: superres, inpaint, denoise, "
                       "edges or colorize (see `gan-bench losses`); default: unconditional generation")
    trial.add_argument("--unpaired", action="store_true", help="train the --task without pairs (CycleGAN / CUT); "
                       "scored on the true pairs")
    trial.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the --task, e.g. factor=4 for superres (repeatable)")
    trial.add_argument("--image-size", type=_positive_int, metavar="N",
                       help="square image side (default: the dataset's, e.g. 28 for mnist)")
    trial.add_argument("--batch-size", type=_positive_int, metavar="N", help="images per batch (default: 64)")
    trial.add_argument("--z-dim", type=_positive_int, metavar="N", help="latent dimension (default: 64)")
    trial.add_argument("--z-dist", choices=["uniform", "normal"],
                       help="latent distribution: U[-1, 1] or N(0, I) (default: uniform; the vae always uses normal)")
    trial.add_argument("--lr", type=float, help=f"learning rate of both networks ({LOSS_DEFAULT})")
    trial.add_argument("--beta1", type=float, help=f"Adam's beta1 ({LOSS_DEFAULT})")
    trial.add_argument("--beta2", type=float, help=f"Adam's beta2 ({LOSS_DEFAULT})")
    trial.add_argument("--n-disc", type=_positive_int, metavar="N",
                       help=f"discriminator steps per generator step ({LOSS_DEFAULT})")
    trial.add_argument("--gp-lambda", type=float, help=f"WGAN-GP / DRAGAN penalty weight ({LOSS_DEFAULT})")
    trial.add_argument("--clip", type=float, help=f"WGAN weight clipping bound ({LOSS_DEFAULT})")
    trial.add_argument("--began-gamma", type=float, help=f"BEGAN's diversity ratio gamma ({LOSS_DEFAULT})")
    trial.add_argument("--began-lambda-k", type=float, help=f"BEGAN's learning rate of k ({LOSS_DEFAULT})")
    trial.add_argument("--r1-gamma", type=float, help=f"R1 penalty weight, 0: off ({LOSS_DEFAULT})")
    trial.add_argument("--d-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                       help=f"batch norm in the discriminator ({LOSS_DEFAULT})")
    trial.add_argument("--optimizer", choices=["adam", "rmsprop"],
                       help=f"adam, or rmsprop as TF1 had it (the paper's Adam-vs-RMSProp WGAN experiment) "
                            f"({LOSS_DEFAULT})")
    trial.add_argument("--init", choices=["model", "compare_gan", "pytorch"],
                       help="weight initialisation: the model's own (infogan: compare_gan's), compare_gan v1's "
                            "N(0, 0.02) and TF batch norm, or PyTorch's layer defaults (default: model)")
    trial.add_argument("--eval-every", type=_positive_int, metavar="N",
                       help="score every N steps and at the last (default: at the last step only)")
    trial.add_argument("--extractor", choices=["domain", "inception"],
                       help="features of FID and KID: a classifier trained on the dataset's labels, or torch-fidelity's"
                            " Inception (fetch its weights with `gan-bench prefetch --inception`) (default: domain)")
    trial.add_argument("--inception-weights", metavar="FILE",
                       help="local weights file of torch-fidelity's inception-v3-compat (default: where `gan-bench "
                            "prefetch --inception` puts it, under $GAN_BENCH_CACHE, else ~/.cache/gan-bench)")
    trial.add_argument("--num-samples", type=_positive_int, metavar="N",
                       help="generated samples per evaluation (default: 1000)")
    trial.add_argument("--term", action="append", default=[], metavar="NAME[=WEIGHT]",
                       help="a loss term added to G's or D's loss, weight 1 unless given, e.g. feature_matching=0.5 "
                            "(repeatable; see `gan-bench losses`)")
    trial.add_argument("--perceptual-net", metavar="NET[:LAYER]",
                       help="the fixed network of a term that needs one (perceptual): domain, the dataset's domain "
                            "classifier; or vgg16 / vgg19, ImageNet VGG cut after LAYER (default relu3_3, e.g. "
                            "vgg16:relu2_2), from the weights file `gan-bench prefetch --vgg NET` fetches (default: "
                            "domain)")
    trial.add_argument("--loss-param", action="append", default=[], metavar="KEY=VALUE",
                       help="a custom loss's own hyperparameter (one of its keyword arguments; repeatable)")
    trial.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the batches and the latents")
    trial.add_argument("--threads", type=_positive_int, metavar="N",
                       help="torch's CPU threads (default: torch's own, all cores); results are bit-identical only "
                            "at the same thread count")
    trial.add_argument("--device", default="auto", help="auto (CUDA if there is one), cpu, cuda or cuda:N")
    trial.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast (CUDA only)")
    trial.add_argument("--data-root", metavar="DIR", help=f"raw datasets and their caches (default: "
                                                          f"{DATA_ROOT_DEFAULT})")
    trial.add_argument("--out", metavar="DIR", help="output folder (default: results/trials/DATASET-LOSS-CONFIGHASH)")
    trial.add_argument("--no-progress", action="store_true", help="no progress bar")
    trial.set_defaults(func=cmd_trial)

    run = command("run", "run (or continue) a study")
    run.add_argument("study", help="a study YAML file")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="worker processes or SLURM array tasks (default: the study's executor.workers)")
    run.add_argument("--results", metavar="DIR", help="results folder (default: results/STUDY_NAME)")
    run.add_argument("--executor", choices=["local", "slurm"], help="run on this executor, with its defaults "
                                                                    "(default: the study's)")
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

    listing = command("losses", "list the registered losses")
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
