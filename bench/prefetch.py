"""Everything a study needs before its first trial: datasets (raw files and uint8 caches), the Inception
weights, the domain feature extractors and the real-data features.

`gan-bench prefetch STUDY.yaml` fetches it all on a machine with internet (a cluster's login node), so
that compute nodes without internet can run the study. `gan-bench run` first lists whatever is missing
— and fails, before any trial starts, naming it and this command — then builds the rest (caches,
extractors, real features) once in the driver, so that workers do not all build them at the same time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from bench import BenchError, data
from bench.metrics import INCEPTION_FILE, Scorer, inception_weights_path
from bench.study import Study
from bench.trial import resolve_device

INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def use_data_root(root: Path | str | None) -> None:
    """Points this process and the workers it starts at a data root (`--data-root` or the study's `data_root`)."""
    if root is not None:
        os.environ["GAN_BENCH_DATA"] = str(Path(root).expanduser().resolve())


def image_size(study: Study, dataset: str) -> int:
    return study.image_size or data.default_size(dataset)


def missing(study: Study) -> list[str]:
    """What the study needs that is not on this machine and would have to be downloaded, one line each."""
    problems = []
    for dataset in study.datasets:
        try:
            options = study.dataset_options.get(dataset, {})
            data.check_available(dataset, image_size(study, dataset), **options)
        except data.DatasetMissingError as error:
            problems.append(error.problem)
    if study.metrics.extractor == "inception" and not inception_weights_path(study.metrics).is_file():
        problems.append(f"Inception weights {inception_weights_path(study.metrics)} not found")
    return problems


def check(study: Study, study_path: Path | str) -> None:
    """Raises one line naming everything missing and the command that fetches it."""
    problems = missing(study)
    if problems:
        raise BenchError(f"missing before any trial can start: {'; '.join(problems)} — fetch with "
                         f"`gan-bench prefetch {study_path}` on a machine with internet")


def download_inception_weights(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads to a temporary file and moves it into place, so an interrupted download leaves nothing behind.
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), progress=True)
    except Exception as error:  # URLError, HTTPError, ssl errors: all mean the same thing here
        raise BenchError(f"cannot download the Inception weights from {INCEPTION_URL} to {path}: "
                         f"{' '.join(str(error).split())}") from None


def prepare(study: Study, download: bool, log: Callable[[str], None] = print) -> None:
    """Builds every dataset cache, domain extractor and real-feature cache the study uses; with `download`, first
    fetches what is missing (datasets through torchvision with its checksums, the Inception weights)."""
    device = resolve_device(study.device)
    weights = inception_weights_path(study.metrics)
    if study.metrics.extractor == "inception" and not weights.is_file():
        if not download:
            raise BenchError(f"Inception weights {weights} not found")
        log(f"downloading the Inception weights to {weights}")
        download_inception_weights(weights)
    for name in study.datasets:
        size, options = image_size(study, name), study.dataset_options.get(name, {})
        dataset = data.fetch(name, size, **options) if download else data.load(name, size, **options)
        log(f"{name}: {len(dataset.train)} train and {len(dataset.test)} test images at "
            f"{'×'.join(map(str, dataset.image_shape))} (data root {data.data_root()})")
        scorer = Scorer(study.metrics, dataset, device)
        scorer.cache_real_features()
        log(f"{name}: real-data features cached for extractor {scorer.extractor_id}")
