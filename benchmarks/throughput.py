"""Trials per device-hour: one trial per worker against packs of K (`executor.pack`), the scorer against its floor,
and the design choice behind packing.

Run from the repository root:

    PYTHONPATH=. python benchmarks/throughput.py [--workers 2] [--packs 1 2 4 8 16] [--trials 12] [--steps 300]
                                                 [--cache DIR] [--quick]

1. Quickstart shape (digits 16×16, MLP pair, batch 64, the quickstart's search space: lr, beta1, n_disc ∈ {1, 5};
   NS-GAN; FID/KID/IS on 1,000 samples at the middle and last step): `--workers` worker processes, each with one
   thread, each training `--trials` trials in packs of K (bench.trial.run_trials, as `executor.pack: K` does), all
   workers started together. Trials per hour = all trials / the slowest worker's wall time, from its first trial's
   start (imports and the cached domain extractor excluded) to its last trial's result. Every K trains the very same
   trials (the same configs, seeds and rows: packing does not move a number), so the ratios compare like with like.
2. The paper's MNIST trial shape (InfoGAN 28×28, batch 64, n_disc 1 and 5, 15,625 D steps, FID on 10,000 samples at
   5 checkpoints). A CPU cannot train it in minutes: the benchmark times 20 steps per pack size and the Inception
   forward on a small batch, and projects one trial's hours from them (it says so). Offline, a randomly initialised
   Inception of torch-fidelity's real architecture stands in for its weights: the same arithmetic, so the same time.
   On a GPU it also projects the paper's MNIST phase 1 (8 models × 100 samples) in device-hours.
3. The scorer: one evaluation's time (bench.metrics.Scorer.score_images, extractor and real statistics already held)
   against its floor, the samples' feature extraction alone, for the domain extractor (quickstart shape), with and
   without KID (whose 100 subsets are torch-fidelity's numpy arithmetic, not feature extraction).
4. The design: one step of 8 trials of the quickstart pair, each its own model in turn (what packing does) against
   one batched model over 8 parameter sets (torch.func.stack_module_state + vmap of functional_call), forward and
   backward of D and G with Adam.

The last line is machine-readable: `throughput: device=… pack8_speedup=X scorer_over_floor=Y`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUICKSTART_SPACE_SEED = 0
PAPER_D_STEPS = 15_625  # compare_gan v1's generate_tasks_lib.py, the paper's MNIST study: D steps per trial
PAPER_EVALUATIONS = 5
PAPER_SAMPLES = 10_000
PAPER_TRIALS = 8 * 100  # phase 1 on MNIST: the eight models, 100 hyperparameter samples each


def quickstart_configs(count: int, steps: int) -> list:
    """`count` trials of the quickstart's shape, hyperparameters drawn from its search space with a fixed seed."""
    import numpy as np

    from bench.config import TrialConfig

    rng = np.random.default_rng(QUICKSTART_SPACE_SEED)
    return [TrialConfig(dataset="digits", model="mlp", loss="ns_gan", steps=steps, eval_steps=[steps // 2, steps],
                        lr=float(math.exp(rng.uniform(math.log(1e-4), math.log(3e-3)))),
                        beta1=float(rng.uniform(0.0, 0.9)), n_disc=int(rng.choice([1, 5])), seed=i, threads=1,
                        device="cpu", metrics={"num_samples": 1000})
            for i in range(count)]


def _worker(configs_json: list[str], pack: int, out: str, barrier, results) -> None:
    import torch

    from bench.config import TrialConfig
    from bench.trial import PackMember, run_trials

    torch.set_num_threads(1)
    configs = [TrialConfig.model_validate_json(c) for c in configs_json]
    barrier.wait()
    start = time.perf_counter()
    statuses = []
    for i in range(0, len(configs), pack):
        chunk = configs[i:i + pack]
        members = [PackMember(c, Path(out) / f"trial-{c.seed}") for c in chunk]
        statuses += [getattr(r, "status", repr(r)) for r in run_trials(members)]
    results.put((time.perf_counter() - start, statuses))


def trials_per_hour(configs: list, pack: int, workers: int, root: Path) -> tuple[float, list[str]]:
    """Runs the configs split over `workers` processes, each in packs of `pack`; trials per hour of wall time."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    shares = [configs[w::workers] for w in range(workers)]
    processes = [context.Process(target=_worker, args=([c.model_dump_json() for c in share], pack,
                                                       str(root / f"pack{pack}-worker{w}"), barrier, results))
                 for w, share in enumerate(shares)]
    for p in processes:
        p.start()
    walls, statuses = [], []
    for _ in processes:
        wall, status = results.get()
        walls.append(wall)
        statuses += status
    for p in processes:
        p.join()
    return len(configs) / max(walls) * 3600, statuses


def step_seconds(config, pack: int, steps: int, device) -> float:
    """Seconds per step of one trial when `pack` trials of `config` (seeds 0…) step in turn (as run_trials does)."""
    import torch

    from bench import data
    from bench.kind import KINDS
    importlib.import_module("bench.trial")  # the driver imports every kind of trial, which registers it

    config = config.resolved()
    dataset = data.load(config.dataset, config.image_size)
    kinds = []
    for seed in range(pack):
        kind = KINDS.get(config.kind)(config.model_copy(update={"seed": seed}), dataset, device)
        torch.manual_seed(seed)
        kind.build()
        kind.begin(torch.Generator(device).manual_seed(seed))
        kinds.append(kind)
    for step in range(1, 3):  # warm-up: allocator, kernels, lazy initialisation
        for kind in kinds:
            kind.step(step)
    synchronize(device)
    start = time.perf_counter()
    for step in range(3, 3 + steps):
        for kind in kinds:
            kind.step(step)
    synchronize(device)
    return (time.perf_counter() - start) / steps / pack


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_inception(path: Path) -> Path:
    """torch-fidelity's inception-v3-compat with random (Kaiming) weights: its real shape and arithmetic, offline."""
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    load_state_dict, load = FeatureExtractorInceptionV3.load_state_dict, torch.load
    FeatureExtractorInceptionV3.load_state_dict, torch.load = (lambda self, state: None), (lambda *a, **k: {})
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    finally:
        FeatureExtractorInceptionV3.load_state_dict, torch.load = load_state_dict, load
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
    torch.save(net.state_dict(), path)
    return path


def inception_seconds_per_image(weights: Path, device, images: int) -> float:
    """Inception features of `images` 28×28 grey samples (upsampled to 299 inside, as for MNIST), per image."""
    import torch
    from torch_fidelity.utils import create_feature_extractor

    extractor = create_feature_extractor("inception-v3-compat", ["2048"], cuda=device.type == "cuda",
                                         feature_extractor_weights_path=str(weights), verbose=False)
    batch = torch.randint(0, 256, (images, 3, 28, 28), dtype=torch.uint8, device=device)
    with torch.no_grad():
        extractor(batch[:2])
        synchronize(device)
        start = time.perf_counter()
        extractor(batch)
        synchronize(device)
    return (time.perf_counter() - start) / images


def scorer_over_floor(repeats: int, kid: bool) -> tuple[float, float]:
    """(one evaluation's seconds, the floor's) for 1,000 quickstart samples and the domain extractor."""
    import torch

    from bench import data
    from bench.metrics import MetricsConfig, Scorer

    dataset = data.load("digits", 16)
    scorer = Scorer(MetricsConfig(num_samples=1000, kid=kid), dataset, torch.device("cpu"))
    images = dataset.train[:1000]  # samples of a trained generator look like these: noisy training images
    generator = torch.Generator().manual_seed(0)
    images = (images.float() + torch.randn(images.shape, generator=generator) * 30).clamp(0, 255).to(torch.uint8)
    scorer.score_images(images)  # makes what is made once: the extractor, the real statistics
    three = images.expand(-1, 3, -1, -1)
    evaluation, floor = [], []
    for _ in range(repeats):
        time.sleep(0.3)  # numpy's BLAS threads spin after KID and would slow the next timed torch work
        start = time.perf_counter()
        with torch.no_grad():
            for batch in three.split(scorer.batch_size):
                scorer.extractor(batch)
        floor.append(time.perf_counter() - start)
        time.sleep(0.3)
        start = time.perf_counter()
        scorer.score_images(images)
        evaluation.append(time.perf_counter() - start)
    return statistics.median(evaluation), statistics.median(floor)


def design_comparison(pack: int = 8, steps: int = 30) -> tuple[float, float]:
    """(ms per step of `pack` quickstart pairs each stepped in turn, ms of one vmap-batched model over them)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state

    from bench import models

    shape, batch, z_dim = (1, 16, 16), 64, 64
    pairs = [models.build("mlp", shape, z_dim, "critic", False) for _ in range(pack)]
    optimisers = [(torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)) for G, D in pairs]

    def own_step(G, D, opt_g, opt_d):
        x, z = torch.rand(batch, *shape), torch.rand(batch, z_dim) * 2 - 1
        fake = G(z)
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

    def in_turn():
        for (G, D), (opt_g, opt_d) in zip(pairs, optimisers):
            own_step(G, D, opt_g, opt_d)

    g_template = copy.deepcopy(pairs[0][0]).to("meta")
    d_template = copy.deepcopy(pairs[0][1]).to("meta")
    g_params, g_buffers = stack_module_state([G for G, _ in pairs])
    d_params, _ = stack_module_state([D for _, D in pairs])
    g_params = {k: v.detach().requires_grad_() for k, v in g_params.items()}
    d_params = {k: v.detach().requires_grad_() for k, v in d_params.items()}
    opt_g, opt_d = torch.optim.Adam(g_params.values(), 1e-3), torch.optim.Adam(d_params.values(), 1e-3)

    def batched(template, params, buffers, inputs):
        return torch.vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), randomness="different")(
            params, buffers, inputs)

    def vmapped():
        x, z = torch.rand(pack, batch, *shape), torch.rand(pack, batch, z_dim) * 2 - 1
        fake = batched(g_template, g_params, g_buffers, z)
        d_loss = (F.softplus(-batched(d_template, d_params, {}, x)).mean(1)
                  + F.softplus(batched(d_template, d_params, {}, fake.detach())).mean(1)).sum()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        frozen = {k: v.detach() for k, v in d_params.items()}
        g_loss = F.softplus(-batched(d_template, frozen, {}, fake)).mean(1).sum()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - start) / steps * 1000

    times = {"in_turn": [], "vmapped": []}
    for _ in range(3):  # interleaved, so that drift on a shared machine hits both
        times["in_turn"].append(timed(in_turn))
        times["vmapped"].append(timed(vmapped))
    return statistics.median(times["in_turn"]), statistics.median(times["vmapped"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--trials", type=int, default=12, help="trials per worker at every pack size")
    parser.add_argument("--steps", type=int, default=300, help="steps per quickstart-shaped trial (the quickstart: "
                        "600)")
    parser.add_argument("--cache", type=Path, default=None, help="gan-bench cache root (sets GAN_BENCH_CACHE)")
    parser.add_argument("--quick", action="store_true", help="fewer trials and steps: a smoke run, not a figure")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.steps, args.packs = 4, 40, [1, 4]
    if args.cache is not None:
        os.environ["GAN_BENCH_CACHE"] = str(args.cache.expanduser().resolve())

    import torch

    from bench import data
    from bench.config import TrialConfig
    from bench.device import resolve_device
    from bench.metrics import Scorer

    device = resolve_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, device {device} ({name}), torch "
          f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    Scorer(TrialConfig().metrics, data.load("digits", 16), torch.device("cpu"))  # the domain extractor, cached

    print(f"\n1. quickstart shape: {args.workers} workers × 1 thread, {args.trials} trials each of {args.steps} "
          f"steps (2 evaluations of 1,000 samples)")
    configs = quickstart_configs(args.workers * args.trials, args.steps)
    rates, reference = {}, None
    with tempfile.TemporaryDirectory() as root:
        for pack in args.packs:
            rate, statuses = trials_per_hour(configs, pack, args.workers, Path(root))
            rates[pack] = rate
            reference = reference or statuses
            print(f"   pack {pack:2}: {rate:8.0f} trials/h  ({rate / rates[args.packs[0]]:.2f}× pack "
                  f"{args.packs[0]}); statuses {dict((s, statuses.count(s)) for s in set(statuses))}")
    pack8_speedup = rates.get(8, math.nan) / rates[1] if 1 in rates else math.nan

    print("\n2. the paper's MNIST trial shape (InfoGAN 28×28, batch 64, 15,625 D steps, 5 × FID on 10,000 samples)")
    mnist = TrialConfig(dataset="mnist5k", model="infogan", loss="ns_gan", image_size=28, count="d_steps",
                        steps=PAPER_D_STEPS, device=str(device))
    with tempfile.TemporaryDirectory() as folder:
        per_image = inception_seconds_per_image(random_inception(Path(folder) / "inception.pth"), device,
                                                8 if device.type == "cpu" else 500)
    scoring_hours = PAPER_EVALUATIONS * PAPER_SAMPLES * per_image / 3600
    print(f"   Inception (random weights of the real shape): {1 / per_image:.1f} images/s → {scoring_hours:.3f} h of "
          "scoring per trial")
    timed_steps = 5 if device.type == "cpu" else 50
    for n_disc in (1, 5):
        config = mnist.model_copy(update={"n_disc": n_disc})
        for pack in [p for p in args.packs if p <= (2 if device.type == "cpu" else 16)]:
            seconds = step_seconds(config, pack, timed_steps, device)
            hours = PAPER_D_STEPS * seconds / 3600 + scoring_hours
            line = (f"   n_disc {n_disc}, pack {pack:2}: {seconds * 1000:7.1f} ms per D step and trial → "
                    f"{hours:6.2f} h per trial (projected from {timed_steps} timed steps)")
            if device.type == "cuda":
                line += f"; phase 1 ({PAPER_TRIALS} trials): {PAPER_TRIALS * hours:.1f} device-hours"
            print(line)

    print("\n3. scoring 1,000 quickstart samples (domain extractor, 1 thread)")
    torch.set_num_threads(1)
    for kid in (True, False):
        seconds, floor = scorer_over_floor(5, kid)
        print(f"   FID, IS{', KID (100 subsets)' if kid else ''}: one evaluation {seconds * 1000:.0f} ms, feature "
              f"extraction alone {floor * 1000:.0f} ms: {seconds / floor:.2f}× the floor")
        if kid:
            evaluation, evaluation_floor = seconds, floor

    print("\n4. design: 8 quickstart pairs, one step (D and G, Adam), 1 thread")
    torch.set_num_threads(1)
    in_turn, vmapped = design_comparison()
    print(f"   each its own model in turn: {in_turn:.1f} ms; one vmap-batched model over 8 parameter sets: "
          f"{vmapped:.1f} ms ({in_turn / vmapped:.2f}× as fast)")

    print(f"\nthroughput: device={device.type}:{name.replace(' ', '_')} pack8_speedup={pack8_speedup:.2f} "
          f"scorer_over_floor={evaluation / evaluation_floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
