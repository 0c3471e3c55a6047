"""Sample quality metrics (FID, KID, IS, precision/recall), all computed by torch-fidelity.

Two feature extractors:
- `inception`: torch-fidelity's `inception-v3-compat`, the paper's protocol, from a local weights file
  (the weights cannot be downloaded at run time on an offline machine);
- `domain`: a small classifier that gan-bench trains on the dataset's training split, deterministically,
  and caches on disk with its test accuracy. It is registered with torch-fidelity, so the metric code
  is the same; only the features differ.
FIDs from different extractors, weights, resizes of the real images, real splits or sample counts are not
comparable, which is why every result carries its protocol (`Scorer.protocol`, `protocol_id`).
Which metrics exist and which way each improves is bench.metric_registry (no torch there).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F
import torch_fidelity
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import (fid_featuresdict_to_statistics, fid_featuresdict_to_statistics_cached,
                                       fid_input_id_to_statistics_cached, fid_statistics_to_metric)
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import (create_feature_extractor, extract_featuresdict_from_input_id_cached,
                                  get_featuresdict_from_dataset, resolve_feature_layer_for_metric)

from bench import BenchError
from bench.data import Dataset
from bench.io import (adopt_default_mode, atomic_torch_save, atomic_write_json, cache_dir, cache_lock, cache_note,
                      damage_reason, environment_fault, move_aside)
from bench.metric_registry import METRICS
# Re-exported: users' metric files and the README decorate with @bench.metrics.metric(...) (studies/my_metrics.py).
from bench.metric_registry import metric  # noqa: F401
from bench.polygon_metrics import PrfProtocol

DOMAIN_EXTRACTOR = "gan-bench-domain"
INCEPTION_EXTRACTOR = "inception-v3-compat"
DOMAIN_FEATURES = 64
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset, 91 MB
# Bump when DomainClassifier or its training changes, so stale cached extractors are not reused.
DOMAIN_VERSION = 3


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extractor: Literal["domain", "inception"] = Field(
        "domain", description="features of FID and KID: domain, a classifier trained on the dataset's labels, or "
        "inception, torch-fidelity's Inception (fetch its weights with `gan-bench prefetch --inception`)")
    num_samples: int = Field(1000, ge=10, description="generated samples scored at each evaluation")
    # v1 scored against the first num_test_examples = 10,000 test images, in order (eval_gan_lib.py lines 128-146).
    num_real: int | None = Field(None, ge=10, description="real images scored against: the first N of the test "
                                 "split, in order; default: all of it")
    fid: bool = Field(True, description="FID, by torch-fidelity (and KID, IS and precision / recall as set); false: "
                      "none of torch-fidelity's metrics, so no feature extractor (a polygons study scored by prf)")
    kid: bool = True
    kid_subsets: int = Field(100, ge=1, description="KID's random subsets (torch-fidelity's default: 100)")
    isc: bool = True
    prc: bool = False
    prf: bool = Field(False, description="precision, recall and F1 on the convex polygon sets (triangles, squares): "
                      "bench.polygon_metrics")
    prf_delta: float = Field(PrfProtocol.delta, gt=0, lt=1, allow_inf_nan=False,
                             description="prf: RMS pixel distance within which a sample is a polygon, a polygon reached")
    prf_inversions: int = Field(PrfProtocol.inversions, ge=1, description="prf: hold-out polygons G is inverted on")
    prf_restarts: int = Field(PrfProtocol.restarts, ge=1, description="prf: starting latents per inversion")
    prf_steps: int = Field(PrfProtocol.steps, ge=1, description="prf: Adam steps per inversion")
    inception_weights: Path | None = Field(None, description="local state_dict of torch-fidelity's inception-v3-compat; "
                                           "default: where `gan-bench prefetch` puts it")
    latent_seed: int = Field(2020, description="fixed latent seed: every evaluation scores the same z")
    extra: list[str] = Field(default_factory=list, description="more metrics computed at every evaluation, each a "
                             "column of the rows: custom metrics, package.module:function (bench.metrics.metric)")

    @field_validator("extra")
    @classmethod
    def _computable(cls, names: list[str]) -> list[str]:
        for i, name in enumerate(names):
            try:
                computed = METRICS.get(name).compute is not None
            except BenchError as error:
                raise ValueError(f"[{i}] {error}") from None
            if not computed:
                raise ValueError(f"[{i}] {name} is computed with every evaluation already; extra takes metrics of "
                                 "one's own (bench.metrics.metric)")
        if len(set(names)) < len(names):
            raise ValueError("a metric is listed twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> MetricsConfig:
        if not self.fid and (self.kid or self.isc or self.prc):
            raise ValueError("kid, isc and prc are torch-fidelity's, computed with FID: set them false too, or fid true")
        if self.prc and self.prf:
            raise ValueError("prc and prf both make the columns precision and recall: choose one")
        return self

    def prf_protocol(self) -> PrfProtocol:
        """How precision, recall and F1 are measured (prf): on num_samples samples, with these settings."""
        return PrfProtocol(delta=self.prf_delta, samples=self.num_samples, inversions=self.prf_inversions,
                           restarts=self.prf_restarts, steps=self.prf_steps)


def inception_weights_path(config: MetricsConfig) -> Path:
    """The Inception weights file a config uses: its own, or the one `gan-bench prefetch` downloads."""
    return Path(config.inception_weights) if config.inception_weights else cache_dir() / "weights" / INCEPTION_FILE


def check_inception_weights(config: MetricsConfig) -> None:
    """Refuses, in one line naming the file and the command that fetches it again, an Inception weights file that does
    not read back as a state_dict (checked once per process). They cannot be rebuilt offline: the default file is
    moved aside, so that `gan-bench prefetch --inception` downloads it again; a file of the user's own is left."""
    path = inception_weights_path(config)

    def check(file: Path) -> None:
        state = read_back(file)
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("not a state_dict of tensors")

    try:
        _verified(path, check)
    except Exception as error:
        reason = _damage(error)
        if config.inception_weights is None:
            move_aside(path, reason, rebuilt=False)
            raise BenchError(f"Inception weights {path}: damaged ({reason}); moved aside to {path.name}.damaged; fetch "
                             "them again with `gan-bench prefetch --inception` on a machine with internet") from None
        raise BenchError(f"metrics.inception_weights: {path} is damaged ({reason}); download {INCEPTION_FILE} there "
                         "again") from None


class DomainClassifier(nn.Module):
    """A small CNN whose penultimate layer gives the 'domain' features; works at any image size ≥ 4."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, DOMAIN_FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(DOMAIN_FEATURES, num_classes)

        # Set after training so that features have unit mean variance per dimension, as KID's polynomial
        # kernel (gamma = 1/d) assumes and as keeps FIDs of different datasets on one scale.
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features * self.feature_scale, self.head(features)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def _dataset_fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha1()
    for t in (dataset.train, dataset.train_labels):
        digest.update(t.contiguous().numpy().tobytes())
    digest.update(f"v{DOMAIN_VERSION}".encode())
    return digest.hexdigest()[:10]


def train_domain_classifier(dataset: Dataset, steps: int = 600, seed: int = 0) -> tuple[nn.Module, float]:
    """Trains the domain classifier on the training split; returns it and its test-split accuracy."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DomainClassifier(dataset.image_shape[0], dataset.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    train = _to_float(dataset.train)
    for _ in range(steps):
        idx = torch.randint(len(train), (128,), generator=generator)
        _, logits = model(train[idx])
        loss = F.cross_entropy(logits, dataset.train_labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        features = torch.cat([model(batch)[0] for batch in train.split(512)])
        model.feature_scale.fill_(features.var(dim=0).mean().rsqrt())
        test = _to_float(dataset.test)
        predictions = torch.cat([model(batch)[1].argmax(1) for batch in test.split(512)])
    accuracy = (predictions == dataset.test_labels).float().mean().item()
    return model, accuracy


# torch's thread count in this process before any trial set its own. The thread count changes the order of float sums,
# so a cache (the domain extractor, the real features) is rebuilt with the count it was first built with: the same
# numbers come out. Caches built before the count was recorded were built by a driver at torch's default.
DEFAULT_THREADS = torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Cache files already read back whole in this process, by (path, size, mtime): checked once, not at every evaluation.
_VERIFIED: set[tuple[str, int, int]] = set()


def _verified(path: Path, check: Callable[[Path], None]) -> None:
    """Runs `check(path)` (which raises if the file is damaged) unless this process checked this very file before."""
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _VERIFIED:
        check(path)
        _VERIFIED.add(key)


def _damage(error: Exception) -> str:
    """Why a cache file did not read back, in a few words; an environment fault (the disk failing now) is raised."""
    if (fault := environment_fault(error)) is not None and not isinstance(error, FileNotFoundError):
        raise fault from None
    return damage_reason(error)


def _noted_threads(cache: Path) -> int | None:
    """The thread count a cache was built with, as its note (io.cache_note) keeps it apart from the cache's own record:
    what a damaged record is written again with."""
    try:
        return int(json.loads(cache_note(cache).read_text())["threads"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _note_threads(cache: Path, threads: int) -> None:
    if _noted_threads(cache) != threads:
        atomic_write_json(cache_note(cache), {"threads": threads})


EXTRACTOR_RECORD = ("dataset", "image_shape", "num_classes", "test_accuracy", "id")


def read_back(path: Path, weights_only: bool = True) -> Any:
    """torch.load of a file that may be damaged: the warnings of unpickling garbage (an unknown pickle protocol, …) are
    not shown, its error says what is wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=weights_only)


def _check_extractor(path: Path) -> None:
    checkpoint = read_back(path)
    if not isinstance(checkpoint, dict) or not {"state_dict", *EXTRACTOR_RECORD} <= checkpoint.keys():
        raise ValueError("not a domain extractor checkpoint")
    DomainClassifier(checkpoint["image_shape"][0], checkpoint["num_classes"]).load_state_dict(checkpoint["state_dict"])


def _extractor_record(path: Path) -> dict[str, Any]:
    """The extractor's record (its .json): its id, test accuracy and the threads it was trained with."""
    record = json.loads(path.with_suffix(".json").read_text())
    if not isinstance(record, dict) or not set(EXTRACTOR_RECORD) <= record.keys():
        raise ValueError("not a domain extractor record")
    return record


def domain_extractor_path(dataset: Dataset) -> Path:
    """The cached domain classifier for this dataset, trained on first use. Its record (test accuracy, the threads it
    was trained with) sits beside it as .json.

    Both files are checked when read (once per process): a damaged record is written again from the weights; damaged
    weights are moved aside and trained again, with the threads they were trained with, so the same weights (and
    FIDs) come out. One process builds at a time (a lock beside them): two workers finding it damaged train it once."""
    c, h, w = dataset.image_shape
    stem = f"domain-{dataset.name}-{c}x{h}x{w}-{_dataset_fingerprint(dataset)}"
    path = cache_dir() / "extractors" / f"{stem}.pt"
    record_path = path.with_suffix(".json")
    with cache_lock(path):
        record, damaged = None, False
        try:
            record = _extractor_record(path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as error:
            move_aside(record_path, _damage(error))
            damaged = True
        if path.exists():
            try:
                _verified(path, _check_extractor)
            except Exception as error:  # unpickling, zip, key and shape errors alike: not the file it was
                move_aside(path, _damage(error))
                damaged = True
        # The count recorded with the cache (its record, else its note), else this process's for a first build, else
        # torch's default (a cache built before counts were recorded was built by a driver).
        first_build = record is None and not damaged and not path.exists()
        threads = ((record or {}).get("threads") or _noted_threads(path)
                   or (torch.get_num_threads() if first_build else DEFAULT_THREADS))
        if not path.exists():
            with torch_threads(threads):
                model, accuracy = train_domain_classifier(dataset)
            info = {"dataset": dataset.name, "image_shape": [c, h, w], "num_classes": dataset.num_classes,
                    "test_accuracy": accuracy, "id": stem}
            atomic_torch_save({"state_dict": model.state_dict(), **info}, path)
        if record is None:  # new, lost or damaged: written from the weights
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            atomic_write_json(record_path, {**{k: checkpoint[k] for k in EXTRACTOR_RECORD}, "threads": threads})
        _note_threads(path, threads)
    return path


def domain_feature_net(dataset: Dataset, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The dataset's domain classifier (the one its FID uses) as a fixed feature network for perceptual loss terms:
    images in [0, 1] at the dataset's shape to its scaled penultimate features; frozen, in eval mode."""
    checkpoint = torch.load(domain_extractor_path(dataset), map_location="cpu", weights_only=True)
    model = DomainClassifier(dataset.image_shape[0], checkpoint["num_classes"])
    model.load_state_dict(checkpoint["state_dict"])
    model = model.to(device).eval().requires_grad_(False)
    return lambda images: model(images)[0]


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity's view of a DomainClassifier: uint8 B×3×H×W in, (features, logits) out."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise BenchError("the domain feature extractor needs feature_extractor_weights_path")
        checkpoint = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.in_channels, self.height, self.width = checkpoint["image_shape"]
        self.classifier = DomainClassifier(self.in_channels, checkpoint["num_classes"])
        self.classifier.load_state_dict(checkpoint["state_dict"])

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "features", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits_unbiased" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Grayscale reaches torch-fidelity repeated to 3 channels; the classifier saw one.
        x = _to_float(images[:, : self.in_channels])
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True)
        features, logits = self.classifier(x)
        provided = {"features": features, "logits_unbiased": logits}
        # torch-fidelity builds features_list from a set: answer in its order, not ours.
        return tuple(provided[name] for name in self.features_list)


if DOMAIN_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(DOMAIN_EXTRACTOR, DomainFeatureExtractor)


class _Images(torch.utils.data.Dataset):
    """uint8 N×C×H×W images as torch-fidelity wants them: 3 channels each."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images → uint8, as an 8-bit PNG would store them (without writing one)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


# Batches of generated images for the extractor. On the CPU calculate_metrics' 64, each image set alone: there an
# image's features depend on the size of its batch (measured with torch 2.14 on this 2-core AVX512 VM: the domain
# extractor's features in batches of 1, 7 or 13 differ from those in batches of 64 by up to 8e-6, a random
# inception-v3-compat's logits in batches of 1 or 5 too; batches of 500 and 1000 (domain) or 256 (Inception) gave the
# bits of 64, but a set's last, smaller batch would then change), so the FIDs stay calculate_metrics' to the bit.
# On CUDA: all sets at once, in large batches.
CPU_BATCH = 64
CUDA_BATCH = 500
# torch-fidelity's keys → our metric names.
FIDELITY_NAMES = {"frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid",
                  "kernel_inception_distance_std": "kid_std", "inception_score_mean": "isc",
                  "inception_score_std": "isc_std", "precision": "precision", "recall": "recall", "f_score": "f_score"}
WEIGHTS_HASH_DIGITS = 12


def file_hash(path: Path) -> str:
    """The first WEIGHTS_HASH_DIGITS hex digits of the sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:WEIGHTS_HASH_DIGITS]


def protocol_id(protocol: Mapping[str, Any]) -> str:
    """One compact string for a `Scorer.protocol`, e.g.
    `inception-v3-compat@1a2b3c4d5e6f resize=tf1_bilinear real=test:10000 gen=10000`.

    FIDs are comparable only under equal protocols: other extractor weights, another resize of the real images,
    another real split or other sample counts (FID is biased by the sample size) all move them. A protocol
    recorded before all these fields existed names only its extractor, and so does its id.
    """
    text = str(protocol["extractor"])
    if "extractor_weights" in protocol:
        text += f"@{protocol['extractor_weights']}"
    if "resize" in protocol:
        text += f" resize={protocol['resize']}"
    if "real_split" in protocol:
        text += f" real={protocol['real_split']}:{protocol['real_count']}"
    if "gen_count" in protocol:
        text += f" gen={protocol['gen_count']}"
    if "prf_delta" in protocol:  # precision / recall / F1 on polygons: their distance, δ and inversion budget
        text += (f" prf={protocol['prf_distance']}<{protocol['prf_delta']} inv={protocol['prf_inversions']}"
                 f"×{protocol['prf_restarts']}×{protocol['prf_steps']}")
    return text


class Scorer:
    """Scores generators against one dataset's test split (its first `num_real` images); the real-data features
    are cached on disk. One per worker: its feature extractor and the real features are made or read once, at its first
    evaluation, and kept."""

    def __init__(self, config: MetricsConfig, dataset: Dataset, device: torch.device):
        if config.num_real is not None and config.num_real > len(dataset.test):
            raise BenchError(f"metrics.num_real: {config.num_real} real images asked for, but the test split of "
                             f"{dataset.name} has {len(dataset.test)}")
        self.config = config
        self.dataset = dataset
        self.device = device
        real = dataset.test[: config.num_real]  # v1's rule: the first N, in order (None: all)
        self.real = _Images(real)
        c, h, w = dataset.image_shape
        # What the scores are made against: the real images, by content.
        self.real_name = f"{dataset.name}-{c}x{h}x{w}-test-{len(real)}-" + hashlib.sha1(
            real.contiguous().numpy().tobytes()).hexdigest()[:10]
        if not config.fid:  # none of torch-fidelity's metrics: no extractor to make, no real features to read
            self.extractor_id, self.extractor_weights, self.extractor_accuracy = "none", None, None
            return
        if config.extractor == "domain":
            if dataset.num_classes < 2:
                raise BenchError(f"metrics.extractor: dataset {dataset.name} has no class labels to train the domain "
                                 "feature extractor on; use metrics.extractor: inception")
            self.weights_path = domain_extractor_path(dataset)
            self.extractor_name = DOMAIN_EXTRACTOR
            self.extractor_id = self.weights_path.stem
            self.extractor_accuracy = json.loads(self.weights_path.with_suffix(".json").read_text())["test_accuracy"]
        else:
            weights = inception_weights_path(config)
            if not weights.is_file():
                # `gan-bench prefetch --inception` fetches the default file only.
                fetch = (f"fetch it with `gan-bench prefetch --inception` on a machine with internet (or download "
                         f"{INCEPTION_FILE} by hand and point metrics.inception_weights at it)"
                         if config.inception_weights is None else
                         f"download {INCEPTION_FILE} there by hand, or leave metrics.inception_weights (trial: "
                         "--inception-weights) unset to use the one `gan-bench prefetch --inception` fetches")
                raise BenchError(f"metrics.inception_weights: Inception weights file {weights} not found; {fetch}; "
                                 "or use metrics.extractor: domain")
            check_inception_weights(config)
            self.weights_path = weights
            self.extractor_name = INCEPTION_EXTRACTOR
            self.extractor_id = INCEPTION_EXTRACTOR
            self.extractor_accuracy = None
        self.extractor_weights = file_hash(self.weights_path)
        # Other weights give other features, even under the same extractor id.
        self.real_cache_name = f"{self.real_name}-{self.extractor_id}-{self.extractor_weights}"
        self._extractor: FeatureExtractorBase | None = None
        self._real_features: dict[str, torch.Tensor] | None = None  # None until read, and when only FID is computed
        self._real_statistics: dict[str, Any] | None = None  # FID's mu and sigma

    @property
    def protocol(self) -> dict[str, Any]:
        """How this Scorer's numbers are made; only numbers of equal protocols compare (see `protocol_id`)."""
        protocol = {
            "extractor": self.extractor_id,
            **({"extractor_weights": self.extractor_weights} if self.extractor_weights else {}),
            "resize": self.dataset.resize,
            # The split in dataset.test: a loader whose reference is another one says so (celeba's reference_split).
            "real_split": getattr(self.dataset, "real_split", "test"),
            "real_count": len(self.real),
            "gen_count": self.config.num_samples,
        }
        return {**protocol, **(self.config.prf_protocol().record() if self.config.prf else {})}

    def sample_images(self, sample: Callable[[int, torch.Generator], torch.Tensor]) -> torch.Tensor:
        """uint8 images from `sample(n, generator) -> [0, 1] images`, with the fixed latent seed, left on the device
        `sample` made them on: the extractor takes them there, without a copy to the CPU and back."""
        generator = torch.Generator(self.device).manual_seed(self.config.latent_seed)
        batches, remaining = [], self.config.num_samples
        with torch.no_grad():
            while remaining > 0:
                n = min(remaining, 500)
                batches.append(to_uint8(sample(n, generator)))
                remaining -= n
        return torch.cat(batches)

    def score_images(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of uint8 N×C×H×W images (on the CPU or the device) against the real images."""
        return self.score_many([images])[0]

    def score_many(self, image_sets: list[torch.Tensor]) -> list[dict[str, float]]:
        """score_images of each set of uint8 N×C×H×W images (all of one C×H×W), on CUDA with one extraction pass;
        each set's metrics are those it has alone."""
        if not self.config.fid:
            return [self._extra(images) for images in image_sets]
        self.cache_real_features()
        return [self._metrics(images, features) for images, features in zip(image_sets, self._features(image_sets))]

    def score(self, sample: Callable[[int, torch.Generator], torch.Tensor]) -> dict[str, float]:
        return self.score_images(self.sample_images(sample))

    def _fidelity_kwargs(self) -> dict[str, Any]:
        """calculate_metrics' arguments as this Scorer called it before it kept its extractor: they name the cache
        files and set every metric's options, so the files and numbers stay those."""
        return dict(
            input2=self.real,
            input2_cache_name=self.real_cache_name,
            cache_root=str(cache_dir() / "fidelity"),
            feature_extractor=self.extractor_name,
            feature_extractor_weights_path=str(self.weights_path),
            cuda=self.device.type == "cuda",
            fid=True,
            kid=self.config.kid,
            isc=self.config.isc,
            prc=self.config.prc,
            kid_subsets=self.config.kid_subsets,
            batch_size=64,  # of the real images, which the cache files hold
            save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
            verbose=False,
        )

    def _layers(self) -> dict[str, str]:
        """The feature layer of each metric computed, as calculate_metrics resolves it."""
        kwargs = self._fidelity_kwargs()
        return {metric: resolve_feature_layer_for_metric(metric, **kwargs)
                for metric in ("isc", "fid", "kid", "prc") if kwargs[metric]}

    @property
    def extractor(self) -> FeatureExtractorBase:
        """torch-fidelity's feature extractor, made (its weights read) at first use and kept."""
        if self._extractor is None:
            # The layers as calculate_metrics lists them: from a set, in its order.
            layers = list(set(self._layers().values()))
            self._extractor = create_feature_extractor(self.extractor_name, layers, **self._fidelity_kwargs())
        return self._extractor

    def _read_real(self) -> None:
        """Reads the real features and FID statistics through torch-fidelity's cache, which makes what it misses, as
        calculate_metrics did: with FID alone it reads the statistics only (its shortcut), else the features and then
        the statistics."""
        kwargs, extractor, layers = self._fidelity_kwargs(), self.extractor, self._layers()
        if layers.keys() == {"fid"}:
            self._real_statistics = fid_input_id_to_statistics_cached(2, extractor, layers["fid"], **kwargs)
            return
        self._real_features = extract_featuresdict_from_input_id_cached(2, extractor, **kwargs)
        self._real_statistics = fid_featuresdict_to_statistics_cached(self._real_features, self.real_cache_name,
                                                                      extractor, layers["fid"], **kwargs)

    @property
    def batch_size(self) -> int:
        """Generated images per batch of the extractor."""
        return CUDA_BATCH if self.device.type == "cuda" else CPU_BATCH

    def _features(self, image_sets: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Each set's features by layer, on the CPU (see CPU_BATCH: there each set goes alone)."""
        if self.device.type != "cuda":
            return [self._extract(images.cpu()) for images in image_sets]
        # Where create_feature_extractor put the extractor: images made there stay there, others go there at once.
        features = self._extract(torch.cat([images.to("cuda") for images in image_sets]))
        sizes = [len(images) for images in image_sets]
        return [dict(zip(features, parts)) for parts in zip(*(f.split(sizes) for f in features.values()))]

    def _extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # cuda=False: the images are where the extractor is (torch-fidelity would pin them to copy them to the GPU,
        # which a CUDA tensor refuses).
        return get_featuresdict_from_dataset(_Images(images), self.extractor, self.batch_size, cuda=False,
                                             save_cpu_ram=True, verbose=False)

    def _metrics(self, images: torch.Tensor, features: dict[str, torch.Tensor]) -> dict[str, float]:
        """One set's metrics from its features, with torch-fidelity's functions in calculate_metrics' order and with its
        arguments, then the extra metrics (on CPU images)."""
        kwargs = {**self._fidelity_kwargs(), "kid_subset_size": min(1000, len(images), len(self.real))}
        layers = self._layers()
        metrics = {}
        if "isc" in layers:
            metrics.update(isc_featuresdict_to_metric(features, layers["isc"], **kwargs))
        statistics = fid_featuresdict_to_statistics(features, layers["fid"])
        metrics.update(fid_statistics_to_metric(statistics, self._real_statistics, verbose=False))
        if "kid" in layers:
            metrics.update(kid_featuresdict_to_metric(features, self._real_features, layers["kid"], **kwargs))
        if "prc" in layers:
            metrics.update(prc_featuresdict_to_metric(features, self._real_features, layers["prc"], **kwargs))
        return {**{FIDELITY_NAMES[k]: float(v) for k, v in metrics.items() if k in FIDELITY_NAMES},
                **self._extra(images)}

    def _extra(self, images: torch.Tensor) -> dict[str, float]:
        """The extra metrics (metrics.extra), on CPU images."""
        if not self.config.extra:  # no copy of the images to the CPU
            return {}
        images, real = images.cpu(), self.dataset.test[: self.config.num_real]
        return {name: float(METRICS.get(name).compute(images, real)) for name in self.config.extra}

    def cache_real_features(self) -> None:
        """Makes sure torch-fidelity's cache holds the real images' features and statistics, whole, and reads them into
        this Scorer (once: later calls, hence evaluations, use what it holds), so that trials only extract their
        samples'.

        Cached files are read back once per process; damaged ones are moved aside and made again with the thread count
        they were first made with (recorded beside them), so the same features, hence the same FIDs, come out. One
        process builds at a time: two workers finding them damaged build them once (10,000 Inception images cost ~25
        min on a CPU). A file damaged after this Scorer read it is not read again by it.
        """
        if not self.config.fid or self._real_statistics is not None:  # nothing to read, or read already
            return
        root = cache_dir() / "fidelity"
        record_path = root / f"{self.real_cache_name}.json"
        with cache_lock(root / self.real_cache_name):
            files = sorted(root.glob(glob.escape(self.real_cache_name) + "-*.pt"))
            for path in files:
                try:
                    _verified(path, lambda file: read_back(file, weights_only=False))
                except Exception as error:  # a truncated zip, garbage: torch-fidelity would crash on it
                    move_aside(path, _damage(error))
            try:
                threads = json.loads(record_path.read_text())["threads"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                if record_path.exists():
                    move_aside(record_path, _damage(error))
                # Features made before the count was recorded were made by a driver, at torch's default.
                threads = _noted_threads(root / self.real_cache_name) or (
                    DEFAULT_THREADS if files else torch.get_num_threads())
            # What is missing (moved aside, or a layer another config did not ask for) is made as it is read.
            with torch_threads(threads):
                self._read_real()
            if not record_path.exists():
                atomic_write_json(record_path, {"threads": threads})
            _note_threads(root / self.real_cache_name, threads)
        adopt_default_mode(root)  # torch-fidelity writes its cache 0600: others of a group share it
