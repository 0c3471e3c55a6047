"""What an image-to-image trial costs: training steps/s and seconds per evaluation of the four kinds of loss that
train different networks — regression alone (G), pix2pix (G and a conditional PatchGAN), CUT (G, D and the PatchNCE
head) and CycleGAN (two generators, two critics).

Run from the repository root:

    PYTHONPATH=. python benchmarks/translation_speed.py [--dataset mnist5k] [--size 16] [--batch 16] [--steps 300]
        [--repeats 3] [--device auto] [--threads 1]

Each repeat trains each kind once, in a rotating order, through `bench.trial.run_trial`; what is timed is its
`train_seconds` (the step loop) and `eval_seconds` (one evaluation on `--num-samples` test pairs: PSNR, SSIM, the
perceptual distance and FID). Medians over repeats are printed. studies/translation_losses.yaml's length follows
from these numbers.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
from pathlib import Path

KINDS = {
    "l1 alone (G)": ({"task": "superres"}, "none", ["l1"]),
    "pix2pix: l1 + ns_gan": ({"task": "superres"}, "ns_gan", ["l1"]),
    "CUT: patchnce + lsgan": ({"task": "denoise", "unpaired": True}, "lsgan_raw", ["patchnce"]),
    "CycleGAN: cycle + identity + lsgan": ({"task": "denoise", "unpaired": True}, "lsgan_raw", ["cycle", "identity"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (a study's default: 1)")
    args = parser.parse_args()

    import torch

    from bench.config import TrialConfig
    from bench.device import resolve_device
    from bench.trial import run_trial

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{datetime.date.today()}  torch {torch.__version__}  device {device} ({name})  threads {args.threads}  "
          f"{args.dataset} {args.size} px, batch {args.batch}, {args.steps} steps, {args.num_samples} test pairs")
    train: dict[str, list[float]] = {kind: [] for kind in KINDS}
    evaluation: dict[str, list[float]] = {kind: [] for kind in KINDS}
    order = list(KINDS)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for kind in order[repeat % len(order):] + order[:repeat % len(order)]:  # rotate: no kind always first
                task, loss, terms = KINDS[kind]
                config = TrialConfig(dataset=args.dataset, image_size=args.size, task=task, loss=loss, terms=terms,
                                     batch_size=args.batch, steps=args.steps, device=args.device,
                                     threads=args.threads,
                                     metrics={"num_samples": args.num_samples, "kid": False, "isc": False})
                result = run_trial(config, Path(tmp) / f"{repeat}-{order.index(kind)}")
                train[kind].append(result.train_seconds)
                evaluation[kind].append(result.eval_seconds)
                print(f"  repeat {repeat}: {kind:36} {args.steps / result.train_seconds:8.1f} steps/s  "
                      f"evaluation {result.eval_seconds:5.2f} s")
    print(f"\nmedian over {args.repeats} repeats:")
    for kind in KINDS:
        print(f"  {kind:36} {args.steps / statistics.median(train[kind]):8.1f} steps/s  "
              f"evaluation {statistics.median(evaluation[kind]):5.2f} s")


if __name__ == "__main__":
    main()
