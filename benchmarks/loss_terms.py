"""What loss terms cost: steps/s of ns_gan alone, with feature matching, and with a perceptual term.

Run from the repository root:

    PYTHONPATH=. python benchmarks/loss_terms.py [--model mlp] [--steps 1500] [--repeats 3] [--device auto]

Each repeat trains the same trial (data set, model, seed, batch, steps) once per variant, in a rotating order, through
`bench.trial.run_trial`; what is timed is its `train_seconds` (the step loop, without scoring or checkpoints). The
medians over repeats are compared with ns_gan's. Target: feature matching ≥ 0.9× ns_gan's steps/s — it reads D's
penultimate features from the forward pass that scores the batch, so all it adds is a mean and a norm per G step.
The perceptual term runs the dataset's domain classifier on the real and the fake batch at every G step, and costs
what those two forward passes (and the backward through the fake one) cost.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
from pathlib import Path

TARGET = 0.9
VARIANTS = {"ns_gan": [], "ns_gan + feature_matching": ["feature_matching"], "ns_gan + perceptual": ["perceptual"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()

    import torch

    from bench.config import TrialConfig
    from bench.device import resolve_device
    from bench.trial import run_trial

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{datetime.date.today()}  torch {torch.__version__}  device {device} ({name})  "
          f"threads {args.threads or torch.get_num_threads()}  {args.dataset}/{args.model}, {args.steps} steps")
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for variant in order[repeat % len(order):] + order[:repeat % len(order)]:  # rotate: no variant always first
                config = TrialConfig(dataset=args.dataset, model=args.model, steps=args.steps,
                                     eval_steps=[args.steps], terms=VARIANTS[variant], device=args.device,
                                     threads=args.threads, metrics={"num_samples": 100, "kid": False})
                result = run_trial(config, Path(tmp) / f"{repeat}-{len(seconds[variant])}-{variant.replace(' ', '')}")
                seconds[variant].append(result.train_seconds)
                print(f"  repeat {repeat}: {variant:28} {args.steps / result.train_seconds:8.1f} steps/s")
    base = args.steps / statistics.median(seconds["ns_gan"])
    print(f"\nmedian over {args.repeats} repeats:")
    for variant, times in seconds.items():
        speed = args.steps / statistics.median(times)
        print(f"  {variant:28} {speed:8.1f} steps/s  {speed / base:5.2f}× ns_gan")
    ratio = statistics.median(seconds["ns_gan"]) / statistics.median(seconds["ns_gan + feature_matching"])
    print(f"feature matching: {ratio:.2f}× ns_gan's steps/s (target ≥ {TARGET}): {'met' if ratio >= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
