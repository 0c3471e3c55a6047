"""Everything a study needs before its first trial: datasets (raw files and uint8 caches), the Inception
and VGG weights, the domain feature extractors and the real-data features.

`gan-bench prefetch STUDY.yaml` fetches it all on a machine with internet (a cluster's login node), so
that compute nodes without internet can run the study; `gan-bench prefetch --dataset NAME [--inception]
[--vgg NET]` does the same for datasets and weights named on the command line, as `gan-bench trial` uses them.
`gan-bench run` first lists whatever is missing — and fails, before any trial starts, naming it and the
command that fetches it — then builds the rest (caches, extractors, real features) once in the driver, so
that workers do not all build them at the same time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from bench import BenchError, data, feature_nets
from bench.io import adopt_default_mode
from bench.metrics import INCEPTION_FILE, MetricsConfig, Scorer, check_inception_weights, inception_weights_path
from bench.study import Study
from bench.device import resolve_device

INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def image_size(study: Study, dataset: str) -> int:
    return study.image_size or data.default_size(study.base_dataset(dataset))


def missing(study: Study) -> list[str]:
    """What the study needs that is not on this machine and would have to be downloaded, one line each."""
    problems = []
    for dataset in study.datasets:
        try:
            options = study.dataset_options.get(dataset, {})
            data.check_available(study.base_dataset(dataset), image_size(study, dataset), **options)
        except data.DatasetMissingError as error:
            problems.append(error.problem)
    if study.metrics.extractor == "inception" and not inception_weights_path(study.metrics).is_file():
        problems.append(f"Inception weights {inception_weights_path(study.metrics)} not found")
    if (vgg := _vgg(study)) and not feature_nets.vgg_weights_path(vgg).is_file():
        problems.append(f"{vgg} weights {feature_nets.vgg_weights_path(vgg)} not found")
    return problems


def _vgg(study: Study) -> str | None:
    """The VGG whose weights the study needs, if any: a study's perceptual_net other than domain is one that some
    loss reads (the study refuses it otherwise)."""
    net = study.perceptual_net.partition(":")[0]
    return net if net in feature_nets.VGG_BLOCKS else None


def check(study: Study, study_path: Path | str) -> None:
    """Raises one line naming everything missing and the command that fetches it."""
    problems = missing(study)
    if problems:
        raise BenchError(f"missing before any trial can start: {'; '.join(problems)} — fetch with "
                         f"`{data.fetch_command(str(study_path))}` on a machine with internet")


def _download(url: str, path: Path, what: str, **options: Any) -> None:
    """Downloads `url` to `path` through torch.hub, with its `options` (a hash_prefix to check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads to a temporary file and moves it into place, so an interrupted download leaves nothing behind.
        torch.hub.download_url_to_file(url, str(path), progress=True, **options)
    except Exception as error:  # URLError, HTTPError, ssl errors, a wrong hash: all mean the same thing here
        raise BenchError(f"cannot download {what} from {url} to {path}: {' '.join(str(error).split())}") from None
    adopt_default_mode(path.parent)  # older torch downloads through a 0600 NamedTemporaryFile: a group shares the cache


def download_inception_weights(path: Path) -> None:
    _download(INCEPTION_URL, path, "the Inception weights")


def download_vgg_weights(net: str) -> None:
    """torchvision's ImageNet weights of `net` to where feature_nets looks, checked against the hash in its name, as
    torchvision checks it."""
    _download(feature_nets.VGG_URLS[net], feature_nets.vgg_weights_path(net), f"the {net} weights",
              hash_prefix=feature_nets.vgg_hash_prefix(net))


def _inception_weights(config: MetricsConfig, download: bool, log: Callable[[str], None]) -> None:
    path = inception_weights_path(config)
    if download and path.is_file() and config.inception_weights is None:
        try:
            check_inception_weights(config)
        except BenchError as damaged:  # moved aside: fetched again below
            log(str(damaged))
    if not path.is_file():
        if not download:
            raise BenchError(f"Inception weights {path} not found")
        log(f"downloading the Inception weights to {path}")
        download_inception_weights(path)


def _vgg_weights(net: str, download: bool, log: Callable[[str], None]) -> None:
    path = feature_nets.vgg_weights_path(net)
    if download and path.is_file():
        try:
            feature_nets.vgg_feature_net(feature_nets.canonical(net), torch.device("cpu"))
        except BenchError as damaged:  # moved aside: fetched again below
            log(str(damaged))
    if not path.is_file():
        if not download:
            raise BenchError(f"{net} weights {path} not found")
        log(f"downloading the {net} weights to {path}")
        download_vgg_weights(net)
    else:
        log(f"{net} weights: {path}, already there")


def _load_dataset(name: str, size: int | None, options: dict[str, Any], download: bool,
                  log: Callable[[str], None]) -> data.Dataset:
    """The dataset's raw files (downloaded if `download` and missing) and its uint8 cache."""
    dataset = data.fetch(name, size, **options) if download else data.load(name, size, **options)
    log(f"{name}: {len(dataset.train)} train and {len(dataset.test)} test images at "
        f"{'×'.join(map(str, dataset.image_shape))} (data root {data.data_root()})")
    return dataset


def _real_features(scorer: Scorer, log: Callable[[str], None]) -> None:
    """The scorer's feature extractor (a domain one is trained here on first use) and its real-data features."""
    scorer.cache_real_features()
    log(f"{scorer.dataset.name}: real-data features cached for extractor {scorer.extractor_id}")


def prepare(study: Study, download: bool, log: Callable[[str], None] = print) -> None:
    """Builds every dataset cache, domain extractor and real-feature cache the study uses; with `download`, first
    fetches what is missing (datasets through torchvision with its checksums, the Inception and VGG weights)."""
    device = resolve_device(study.device)
    if study.metrics.extractor == "inception":
        _inception_weights(study.metrics, download, log)
    if vgg := _vgg(study):
        _vgg_weights(vgg, download, log)
    for name in study.datasets:
        dataset = _load_dataset(study.base_dataset(name), image_size(study, name), study.dataset_options.get(name, {}),
                                download, log)
        if study.metrics.fid:  # else no torch-fidelity metric, no extractor, no real features
            _real_features(Scorer(study.metrics, dataset, device), log)


def fetch(datasets: list[str], options: dict[str, Any], size: int | None, inception: bool, vgg: list[str],
          log: Callable[[str], None] = print) -> None:
    """`gan-bench prefetch --dataset NAME … [--inception] [--vgg NET …]`: downloads the datasets (each with the same
    options, at `size` or its default size) and builds what `gan-bench trial` would otherwise build on first use:
    their caches and, for a dataset with classes, the domain extractor and the real features of the trial's default
    metrics; with `inception` and `vgg`, downloads torch-fidelity's Inception weights and torchvision's VGG weights to
    their default paths."""
    for name in datasets:  # unknown names and options fail here, before anything is downloaded
        data.check_options(name, options)
    metrics = MetricsConfig()
    if inception:
        _inception_weights(metrics, True, log)
    for net in dict.fromkeys(vgg):
        _vgg_weights(net, True, log)
    device = resolve_device("auto")
    for name in dict.fromkeys(datasets):  # each once, in the order given
        dataset = _load_dataset(name, size, options, True, log)
        if dataset.num_classes >= 2:  # the domain extractor is a classifier: celeba, without classes, has none
            _real_features(Scorer(metrics, dataset, device), log)
        else:
            log(f"{name}: no class labels, so no domain feature extractor (score it with --extractor inception)")
