"""`gan-bench prefetch` and the check before a run: what is missing is named, with the command that fetches it,
before any trial starts; what prefetch fetched makes the run work offline."""

import pytest
import yaml

from bench import prefetch
from bench.cli import main
from bench.metrics import INCEPTION_FILE

STUDY = {
    "name": "fetch",
    "datasets": ["digits"],
    "losses": ["ns_gan"],
    "budget": {"samples": 1, "steps": 5},
    "metrics": {"num_samples": 50, "kid": False},
}


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
    assert err.count("gan-bench prefetch") == 1 and err.endswith(f"`gan-bench prefetch {study}` on a machine with "
                                                                 "internet")
    assert not (tmp_path / "r").exists()
