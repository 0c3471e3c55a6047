import os
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def bench_cache(tmp_path_factory):
    """One cache for the whole session: the digits domain classifier is trained once, never in ~/.cache."""
    path = tmp_path_factory.mktemp("gan-bench-cache")
    old = os.environ.get("GAN_BENCH_CACHE")
    os.environ["GAN_BENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GAN_BENCH_CACHE", None)
    else:
        os.environ["GAN_BENCH_CACHE"] = old


@pytest.fixture
def scratch_registry(monkeypatch):
    """`scratch_registry(module, "LOSSES", ns_gan=spec)`: the module's registry replaced, for this test, by a copy with
    these entries replaced; entries added to the copy go with the test."""
    from bench.registry import Registry

    def copy(module, attribute: str, **replaced):
        original = getattr(module, attribute)
        scratch = Registry(original.kind, original.custom, original.form)
        for name, entry in original.items():
            scratch.add(name, replaced.pop(name, entry), original.description(name))
        assert not replaced, f"not in {attribute}: {', '.join(replaced)}"
        for holder in list(sys.modules.values()):  # a registry re-exported (bench.data's) is replaced where it is read
            if getattr(holder, "__name__", "").startswith("bench") and getattr(holder, attribute, None) is original:
                monkeypatch.setattr(holder, attribute, scratch)
        return scratch

    return copy


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A state_dict of torch-fidelity's own inception-v3-compat with random weights: its real architecture, offline.
    Kaiming init, because the default init makes the pool features vanish (FID ≈ 0 whatever the inputs) and proves
    nothing."""
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with pytest.MonkeyPatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        m.setattr(torch, "load", lambda *a, **k: {})
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
    weights = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(net.state_dict(), weights)
    return weights
