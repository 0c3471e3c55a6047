"""`gan-bench prefetch` and the check before a run: what is missing is named, with the command that fetches it,
before any trial starts; what prefetch fetched makes the run work offline. `gan-bench prefetch --dataset NAME
[--inception]` does the same without a study, and every hint names a command that works as printed."""

import re
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision
import yaml

from bench import data, prefetch
from bench.cli import build_parser, main
from bench.metrics import INCEPTION_FILE, MetricsConfig

STUDY = {
    "name": "fetch",
    "datasets": ["digits"],
    "losses": ["ns_gan"],
    "budget": {"samples": 1, "steps": 5},
    "metrics": {"num_samples": 50, "kid": False},
}


@pytest.fixture(autouse=True)
def data_root_env(monkeypatch):
    """--data-root reaches the code through $GAN_BENCH_DATA, set for the whole process: restored after each test."""
    monkeypatch.delenv("GAN_BENCH_DATA", raising=False)


def write(tmp_path, **changes):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return path


def test_prefetch_builds_the_extractor_and_the_real_features(tmp_path, capsys, bench_cache):
    assert main(["prefetch", str(write(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "digits: 1437 train and 360 test images at 1×16×16" in out
    assert "everything is in place" in out
    assert list((bench_cache / "extractors").glob("domain-digits-1x16x16-*.pt"))
    cached = list((bench_cache / "fidelity").glob("digits-1x16x16-test-*-features-*.pt"))
    assert cached  # the real-data features: trials only extract their samples'
    before = {p: p.stat().st_mtime_ns for p in cached}
    assert main(["prefetch", str(write(tmp_path))]) == 0  # a second prefetch reuses everything
    assert {p: p.stat().st_mtime_ns for p in cached} == before


def test_run_names_missing_inception_weights_and_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    study = write(tmp_path, metrics={"extractor": "inception"})
    assert main(["run", str(study), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "cache" / "weights" / INCEPTION_FILE) in err
    assert f"gan-bench prefetch {study}" in err
    assert not (tmp_path / "results").exists()


def test_prefetch_downloads_missing_inception_weights_to_the_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    fetched, cached = [], []

    def download(path):
        fetched.append(path)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")

    class Scorer:  # the real one would run Inception on the test split: minutes on a CPU
        def __init__(self, config, dataset, device):
            self.dataset, self.extractor_id = dataset, config.extractor

        def cache_real_features(self):
            cached.append(self.dataset.name)

    monkeypatch.setattr(prefetch, "download_inception_weights", download)
    monkeypatch.setattr(prefetch, "Scorer", Scorer)
    assert main(["prefetch", str(write(tmp_path, metrics={"extractor": "inception"}))]) == 0
    assert fetched == [tmp_path / "cache" / "weights" / INCEPTION_FILE] and cached == ["digits"]
    assert prefetch.missing(prefetch_study(tmp_path, metrics={"extractor": "inception"})) == []


def prefetch_study(tmp_path, **changes):
    from bench.study import load_study

    return load_study(write(tmp_path, **changes))


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(url, dst, progress):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(prefetch.torch.hub, "download_url_to_file", offline)
    with pytest.raises(prefetch.BenchError, match="cannot download the Inception weights from https://.*name resol"):
        prefetch.download_inception_weights(tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()


def test_run_lists_every_missing_dataset_once_with_the_fetch_command(tmp_path, capsys):
    study = write(tmp_path, datasets=["mnist", "cifar10"])
    assert main(["run", str(study), "--data-root", str(tmp_path / "empty"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"dataset 'mnist': missing {tmp_path / 'empty' / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'}" in err
    assert f"dataset 'cifar10': missing {tmp_path / 'empty' / 'cifar-10-batches-py' / 'data_batch_1'}" in err
    assert err.count("gan-bench prefetch") == 1
    assert err.endswith(f"`gan-bench prefetch {study} --data-root {tmp_path / 'empty'}` on a machine with internet")
    args = build_parser().parse_args(hint(err))
    assert (args.study, args.data_root) == (str(study), str(tmp_path / "empty"))
    assert not (tmp_path / "r").exists()


def hint(err: str) -> list[str]:
    """The arguments of the one `gan-bench prefetch` command that an error message names."""
    (command,) = re.findall(r"`(gan-bench prefetch [^`]*)`", err)
    return shlex.split(command)[1:]


MNIST_FILES = {"train-images-idx3-ubyte": (12, 28, 28), "train-labels-idx1-ubyte": (12,),
               "t10k-images-idx3-ubyte": (6, 28, 28), "t10k-labels-idx1-ubyte": (6,)}


def fake_mnist_download(monkeypatch) -> list[str]:
    """Stands in for torchvision's download_and_extract_archive, offline: leaves small extracted IDX files."""
    calls = []

    def download_and_extract_archive(url, download_root, filename, md5):
        calls.append(filename)
        shape = MNIST_FILES[filename.removesuffix(".gz")]
        array = np.random.default_rng(len(calls)).integers(0, 10, shape, dtype=np.uint8)
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        Path(download_root, filename.removesuffix(".gz")).write_bytes(header + array.tobytes())

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", download_and_extract_archive)
    return calls


@pytest.fixture
def scorers(monkeypatch) -> list[tuple[str, MetricsConfig]]:
    """Records what prefetch would score instead: the real Scorer trains a domain classifier and extracts real
    features, minutes on a shared CPU (the study's prefetch test above runs it)."""
    built = []

    class Scorer:
        def __init__(self, config, dataset, device):
            self.dataset, self.extractor_id = dataset, config.extractor
            built.append((dataset.name, config))

        def cache_real_features(self):
            pass

    monkeypatch.setattr(prefetch, "Scorer", Scorer)
    return built


def test_prefetch_datasets_without_a_study(tmp_path, monkeypatch, capsys, scorers):
    downloads = fake_mnist_download(monkeypatch)
    root = tmp_path / "data"
    argv = ["prefetch", "--dataset", "mnist", "--dataset", "digits", "--dataset", "mnist", "--image-size", "16",
            "--data-root", str(root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(downloads) == 4 and (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert "mnist: 12 train and 6 test images at 1×16×16" in out and "digits: 1437 train" in out
    assert "everything is in place" in out
    assert (root / "gan-bench-cache" / "mnist-16" / "meta.json").is_file()
    assert scorers == [("mnist", MetricsConfig()), ("digits", MetricsConfig())]  # each once: a trial's defaults
    monkeypatch.setenv("GAN_BENCH_DATA", str(root))
    data.check_available("mnist", 16)  # a trial finds it offline
    assert main(argv) == 0 and len(downloads) == 4  # a second prefetch downloads nothing


def test_prefetch_of_a_dataset_without_classes_builds_no_domain_extractor(monkeypatch, capsys, scorers):
    classless = data.load("digits", 8)
    classless = data.Dataset("celeba", classless.train, classless.test, classless.train_labels * 0,
                             classless.test_labels * 0, num_classes=0, resize=classless.resize)
    monkeypatch.setattr(data, "fetch", lambda name, size, **options: classless)
    assert main(["prefetch", "--dataset", "celeba"]) == 0
    assert "celeba: no class labels, so no domain feature extractor" in capsys.readouterr().out
    assert scorers == []


def test_prefetch_inception_weights_without_a_study(tmp_path, monkeypatch, scorers):
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    fetched = []
    monkeypatch.setattr(prefetch, "download_inception_weights", lambda path: fetched.append(path))
    assert main(["prefetch", "--inception"]) == 0
    assert fetched == [tmp_path / "cache" / "weights" / INCEPTION_FILE] and scorers == []


@pytest.mark.parametrize("argv, message", [
    ([], "give either a study file or --dataset NAME / --inception"),
    (["STUDY", "--dataset", "mnist"], "not both"),
    (["STUDY", "--inception"], "not both"),
    (["STUDY", "--image-size", "16"], "--image-size: only with --dataset"),
    (["--inception", "--dataset-option", "resize=antialias"], "--dataset-option, --image-size: only with --dataset"),
    (["--dataset", "mnist", "--dataset-option", "resize"], "--dataset-option: expected KEY=VALUE"),
    (["--dataset", "mnist", "--dataset", "cifar"], "unknown dataset 'cifar'"),
])
def test_prefetch_takes_a_study_or_datasets_and_says_so_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    downloads = fake_mnist_download(monkeypatch)
    argv = [str(write(tmp_path)) if word == "STUDY" else word for word in argv]
    assert main(["prefetch", *argv, "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gan-bench: error: ") and "\n" not in err and message in err
    assert downloads == []  # refused before anything is fetched


def test_the_hint_of_a_trial_without_its_dataset_is_a_command_that_fetches_it(tmp_path, monkeypatch, capsys, scorers):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["trial", "--dataset", "mnist", "--data-root", str(empty), "--out", str(tmp_path / "t"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset 'mnist': missing" in err
    args = build_parser().parse_args(hint(err))
    assert (args.func.__name__, args.study, args.dataset, args.data_root) == ("cmd_prefetch", None, ["mnist"],
                                                                             str(empty))
    fake_mnist_download(monkeypatch)
    assert main(hint(err)) == 0  # it works as printed
    data.check_available("mnist")
