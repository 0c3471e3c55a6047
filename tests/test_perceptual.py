"""The perceptual term's network, `perceptual_net` (issue 12, point 3): the dataset's domain classifier by default, or
torchvision's ImageNet VGG16/VGG19 cut after a layer, from the local weights file that `gan-bench prefetch --vgg NET`
downloads. Without that file a trial or a run is refused before any work, in one line that names the command."""

import json
import os
import shutil
import tempfile
import urllib.error

import pytest
import torch
import torchvision
import yaml

from bench import BenchError, feature_nets, prefetch
from bench.cli import main
from bench.study import load_study

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
CPU = torch.device("cpu")
TRIAL = ["trial", "--term", "perceptual", "--perceptual-net", "vgg16", "--steps", "2", "--batch-size", "16",
         "--num-samples", "50", "--no-progress"]
COMPOSITE = {"name": "ns_vgg", "adversarial": "ns_gan", "g_terms": {"perceptual": 1.0}}
STUDY = {"name": "perceptual", "datasets": ["digits"], "losses": ["ns_gan", COMPOSITE], "perceptual_net": "vgg16",
         "budget": {"samples": 1, "steps": 2}, "metrics": {"num_samples": 50, "kid": False, "isc": False}}


@pytest.fixture(scope="session")
def vgg16_cache(tmp_path_factory, bench_cache):
    """A cache holding VGG16 weights in torchvision's format: the state_dict of vgg16(weights=None), 528 MB, written
    once for the session. Its own cache, not the session's, so that other tests find no VGG weights; but it shares
    the session's domain extractors and real features, which take seconds to build."""
    root = tmp_path_factory.mktemp("vgg-cache")
    for shared in ("extractors", "fidelity"):
        (bench_cache / shared).mkdir(exist_ok=True)
        (root / shared).symlink_to(bench_cache / shared)
    (root / "weights").mkdir()
    with torch.random.fork_rng():  # the random initialisation leaves the other tests' random numbers as they were
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), root / "weights" / VGG16_FILE)
    yield root
    (root / "weights" / VGG16_FILE).unlink()  # pytest keeps the last sessions' folders: not 528 MB each


@pytest.fixture
def with_vgg16(vgg16_cache, monkeypatch):
    monkeypatch.setenv("GAN_BENCH_CACHE", str(vgg16_cache))
    return vgg16_cache / "weights" / VGG16_FILE


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GAN_BENCH_CACHE", str(cache))
    monkeypatch.delenv("GAN_BENCH_DATA", raising=False)
    yield cache
    for weights in (cache / "weights").glob("*.pth"):  # a fetched VGG is 528 MB, and pytest keeps the folder
        weights.unlink()


def write_study(tmp_path, **changes):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return path


def one_line(capsys) -> str:
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


# ---------------------------------------------------------------------------------------------------------------------
# The setting


def test_perceptual_net_names_a_layer_and_a_wrong_one_is_one_line(tmp_path, capsys):
    assert feature_nets.canonical("vgg16") == "vgg16:relu3_3"  # configs record the layer the default stands for
    assert feature_nets.canonical("vgg19:relu5_4") == "vgg19:relu5_4"
    assert main([*TRIAL, "--perceptual-net", "vgg16:relu5_4", "--out", str(tmp_path / "t")]) == 2
    assert one_line(capsys) == ("gan-bench: error: perceptual_net: vgg16 has no layer 'relu5_4'; valid: relu1_1, "
                                "relu1_2, relu2_1, relu2_2, relu3_1, relu3_2, relu3_3, relu4_1, relu4_2, relu4_3, "
                                "relu5_1, relu5_2, relu5_3")
    assert main([*TRIAL, "--perceptual-net", "resnet50", "--out", str(tmp_path / "t")]) == 2
    assert "expected domain, vgg16[:LAYER] or vgg19[:LAYER], got 'resnet50'" in one_line(capsys)


def test_a_perceptual_net_that_no_term_reads_is_refused(tmp_path, capsys):
    """It would silently do nothing, as a hyperparameter the loss never reads would."""
    assert main(["trial", "--perceptual-net", "vgg16", "--out", str(tmp_path / "t")]) == 2
    assert "perceptual_net: no term of this trial uses a fixed feature network" in one_line(capsys)
    assert main(["validate", str(write_study(tmp_path, losses=["ns_gan"]))]) == 2
    assert one_line(capsys).endswith("study.yaml: perceptual_net: no loss of the study has a term that uses a fixed "
                                     "feature network (perceptual)")


def test_a_study_gives_its_perceptual_net_to_the_losses_that_read_it_only(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.trial_fields("digits", "ns_vgg")["perceptual_net"] == "vgg16:relu3_3"
    assert "perceptual_net" not in study.trial_fields("digits", "ns_gan")  # ns_gan's trials are unchanged


# ---------------------------------------------------------------------------------------------------------------------
# Missing weights: refused before any work


def test_a_trial_on_vgg_without_its_weights_is_one_line_naming_prefetch(empty_cache, tmp_path, capsys):
    out = tmp_path / "trial"
    assert main([*TRIAL, "--out", str(out)]) == 2
    assert one_line(capsys) == (f"gan-bench: error: perceptual_net: vgg16 weights {empty_cache / 'weights' / VGG16_FILE}"
                                " not found; fetch them with `gan-bench prefetch --vgg vgg16` (on a machine with "
                                "internet)")
    assert not out.exists()
    assert not (empty_cache / "extractors").exists()  # the domain extractor was not trained either


def test_a_study_on_vgg_without_its_weights_is_refused_by_run_before_any_work(empty_cache, tmp_path, capsys):
    study = write_study(tmp_path)
    # validate checks the study file, not this machine, as for the Inception weights: status and report read a
    # results folder's study.yaml where the weights need not be.
    assert main(["validate", str(study)]) == 0
    capsys.readouterr()
    assert main(["run", str(study), "--results", str(tmp_path / "results")]) == 2
    assert one_line(capsys) == (f"gan-bench: error: missing before any trial can start: vgg16 weights "
                                f"{empty_cache / 'weights' / VGG16_FILE} not found — fetch with `gan-bench prefetch "
                                f"{study}` on a machine with internet")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------------------------------
# With the weights


def test_the_vgg_feature_net_is_frozen_and_gives_its_layers_features(with_vgg16):
    net = feature_nets.vgg_feature_net("vgg16:relu3_3", CPU)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    state = torch.load(with_vgg16, map_location="cpu", weights_only=True, mmap=True)
    assert torch.equal(net.features[14].weight, state["features.14.weight"])  # conv3_3, the file's
    gray, color = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 32, 32)
    # 16 px are upsampled to 32; relu3_3 comes after two pools: 256 channels at 8×8
    assert net(gray).shape == net(color).shape == (2, 256, 8, 8)
    assert torch.equal(net(gray), net(gray.expand(-1, 3, -1, -1)))  # grayscale: the channel repeated
    fake = color.clone().requires_grad_()
    net(fake).sum().backward()  # frozen, yet G's images get a gradient through it
    assert fake.grad.abs().sum() > 0
    assert feature_nets.vgg_feature_net("vgg16:relu2_2", CPU)(color).shape == (2, 128, 16, 16)


def test_a_file_that_is_not_the_vgg_weights_is_one_line(empty_cache):
    (empty_cache / "weights").mkdir(parents=True)
    (empty_cache / "weights" / VGG16_FILE).write_bytes(b"<html>not found</html>")
    with pytest.raises(BenchError, match=r"^perceptual_net: .*vgg16-397923af.pth is not torchvision's vgg16 weights "
                                         r"\(.*\); moved aside to vgg16-397923af.pth.damaged; fetch it again with "
                                         r"`gan-bench prefetch --vgg vgg16`$"):
        feature_nets.vgg_feature_net("vgg16:relu3_3", CPU)
    # Moved aside, so that `gan-bench prefetch --vgg vgg16` downloads it again rather than keep it.
    assert not (empty_cache / "weights" / VGG16_FILE).exists()
    assert (empty_cache / "weights" / f"{VGG16_FILE}.damaged").read_bytes() == b"<html>not found</html>"


def test_a_trial_with_the_perceptual_term_on_vgg16_runs(with_vgg16, tmp_path, capsys):
    out = tmp_path / "trial"
    assert main([*TRIAL, "--out", str(out)]) == 0
    assert "completed after 2 steps" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["config"]["perceptual_net"] == "vgg16:relu3_3"


# ---------------------------------------------------------------------------------------------------------------------
# gan-bench prefetch --vgg


def test_prefetch_vgg_without_internet_is_one_line(empty_cache, monkeypatch, capsys):
    def offline(url, dst, progress, hash_prefix):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(prefetch.torch.hub, "download_url_to_file", offline)
    assert main(["prefetch", "--vgg", "vgg16"]) == 2
    assert one_line(capsys) == (f"gan-bench: error: cannot download the vgg16 weights from {VGG16_URL} to "
                                f"{empty_cache / 'weights' / VGG16_FILE}: <urlopen error [Errno -3] Temporary failure "
                                "in name resolution>")
    assert list((empty_cache / "weights").iterdir()) == []


def test_prefetch_vgg_puts_the_weights_where_a_trial_finds_them_with_a_new_files_mode(
        vgg16_cache, empty_cache, monkeypatch, capsys):
    downloads = []

    def download(url, dst, progress, hash_prefix):
        """As torch before 2.4 did: through a 0600 NamedTemporaryFile moved into place."""
        downloads.append((url, hash_prefix))
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(dst), delete=False) as tmp:
            with open(vgg16_cache / "weights" / VGG16_FILE, "rb") as source:
                shutil.copyfileobj(source, tmp)
        shutil.move(tmp.name, dst)

    monkeypatch.setattr(prefetch.torch.hub, "download_url_to_file", download)
    assert main(["prefetch", "--vgg", "vgg16", "--vgg", "vgg16"]) == 0
    path = empty_cache / "weights" / VGG16_FILE
    assert downloads == [(VGG16_URL, "397923af")]  # once, checked against the hash in torchvision's file name
    assert str(path) in capsys.readouterr().out
    probe = path.with_name("probe")
    probe.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777
    assert feature_nets.vgg_feature_net("vgg16:relu3_3", CPU)(torch.rand(1, 1, 16, 16)).shape == (1, 256, 8, 8)


def test_prefetch_of_a_study_on_vgg_fetches_its_weights(empty_cache, tmp_path, monkeypatch):
    fetched = []

    def download(net):
        fetched.append(net)
        feature_nets.vgg_weights_path(net).parent.mkdir(parents=True)
        feature_nets.vgg_weights_path(net).write_bytes(b"weights")

    class Scorer:  # the real one would train the domain extractor and extract the real features
        def __init__(self, config, dataset, device):
            self.dataset, self.extractor_id = dataset, config.extractor

        def cache_real_features(self):
            pass

    monkeypatch.setattr(prefetch, "download_vgg_weights", download)
    monkeypatch.setattr(prefetch, "Scorer", Scorer)
    study = write_study(tmp_path)
    assert prefetch.missing(load_study(study)) == [f"vgg16 weights {empty_cache / 'weights' / VGG16_FILE} not found"]
    assert main(["prefetch", str(study)]) == 0
    assert fetched == ["vgg16"] and prefetch.missing(load_study(study)) == []
