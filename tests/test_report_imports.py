"""`gan-bench report` reads a results folder without torch: it neither needs it installed nor waits seconds for it to
load (bench.io imports torch inside atomic_torch_save only; the metrics' descriptions are bench.metric_registry)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torch_fidelity")

# What the gan-bench console script runs, in a fresh interpreter, then which of HEAVY it loaded on the way.
REPORT = f"""
import json, sys
from bench.cli import main
code = main(["report", sys.argv[1]])
print(json.dumps({{"code": code, "imported": [name for name in {HEAVY!r} if name in sys.modules]}}))
"""


def write_results(folder: Path) -> None:
    """A small search stage's results.csv: three losses, four trials each, three evaluations, one run diverged."""
    lines = ["stage,dataset,loss,trial,seed,step,status,fid,protocol,extractor,param_lr"]
    protocol = "domain-digits-1x16x16-abc@0123456789ab resize=antialias real=test:360 gen=100"
    for l, loss in enumerate(["ns_gan", "wgan", "lsgan"]):
        for trial in range(4):
            diverged = loss == "wgan" and trial == 1
            for s, step in enumerate([100, 200, 300]):
                fid = "" if diverged and step > 100 else f"{90 - 10 * s - 3 * trial + l:.3f}"
                status = "diverged" if diverged else "completed"
                lines.append(f"search,digits,{loss},{trial},0,{step},{status},{fid},{protocol},"
                             f"domain-digits-1x16x16-abc,{1e-4 * (trial + 1):g}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_gan_bench_report_never_imports_torch(tmp_path):
    write_results(tmp_path)
    done = subprocess.run([sys.executable, "-c", REPORT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0 and (tmp_path / "summary.csv").is_file()
    assert outcome["imported"] == [], f"`gan-bench report` imported {', '.join(outcome['imported'])}"
