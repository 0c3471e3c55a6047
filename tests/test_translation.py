"""Image-to-image trials and studies: training beats the identity baseline, unpaired training never sees a true pair,
resume is exact, bad specs are refused in one line, and a study optimises and reports SSIM (maximised)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml

from bench import data, image_metrics, tasks
from bench.cli import main
from bench.confirm import best_configuration
from bench.plan import Plan
from bench.report import best_of_k_bootstrap, summary
from bench.storage import open_storage
from bench.study import Study
from bench.config import TrialConfig, g_updates
from bench.trial import run_trial

FAST = {"dataset": "digits", "batch_size": 16, "threads": 1,
        "metrics": {"num_samples": 100, "kid": False, "isc": False}}


def test_a_paired_trial_beats_the_identity_baseline_on_psnr(tmp_path):
    config = TrialConfig(**FAST, task={"task": "denoise", "options": {"sigma": 0.3}}, loss="none", terms=["l1"],
                         steps=150, lr=2e-3)
    result = run_trial(config, tmp_path)
    targets = data.load("digits").test[:100].float() / 255
    sources = tasks.test_pairs(config.task, targets, config.metrics.latent_seed)
    baseline = image_metrics.psnr(sources, targets).mean().item()  # output = input
    row = result.rows[-1]
    assert result.status == "completed"
    assert row["psnr"] > baseline + 3, (row["psnr"], baseline)
    assert row["ssim"] > image_metrics.ssim(sources, targets).mean().item()
    assert {"psnr", "ssim", "perceptual", "fid"} <= set(row) and row["fid"] > 0
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_unpaired_training_never_sees_a_true_pair(tmp_path, monkeypatch):
    draws = []

    def recording(spec, n_train, generator):
        made = real_sampler(spec, n_train, generator)
        draw = made.draw
        made.draw = lambda n: draws.append(draw(n)) or draws[-1]
        draws_of.append(made)
        return made

    real_sampler, draws_of = tasks.sampler, []
    monkeypatch.setattr(tasks, "sampler", recording)
    config = TrialConfig(**FAST, task={"task": "denoise", "unpaired": True}, loss="lsgan_raw",
                         terms=["cycle", "identity"], steps=6, n_disc=2)
    run_trial(config, tmp_path)
    (sampler,) = draws_of
    sources, targets = set(sampler.source_pool.tolist()), set(sampler.target_pool.tolist())
    assert not sources & targets and len(draws) == 6 * 2
    for source_idx, target_idx in draws:
        assert set(source_idx.tolist()) <= sources and set(target_idx.tolist()) <= targets


@pytest.mark.parametrize("task, loss, terms", [
    ({"task": "denoise", "unpaired": True}, "lsgan_raw", ["cycle", "identity"]),  # G, F, D, D_A
    ({"task": "inpaint", "unpaired": True}, "ns_gan", ["patchnce"]),  # G and the PatchNCE head
    ({"task": "superres"}, "wgan_gp", ["l1", "feature_matching"]),  # conditional D with a penalty
])
def test_a_resumed_trial_gives_the_rows_of_an_uninterrupted_one(tmp_path, task, loss, terms):
    config = TrialConfig(**FAST, task=task, loss=loss, terms=terms, steps=6, eval_steps=[3, 6])
    whole = run_trial(config, tmp_path / "whole")

    def stop(step, row):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(config, tmp_path / "resumed", on_evaluation=stop)
    resumed = run_trial(config, tmp_path / "resumed")
    strip = lambda rows: [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]
    assert strip(resumed.rows) == strip(whole.rows) and len(whole.rows) == 2


def test_d_steps_count_d_updates(tmp_path):
    """With count d_steps, 6 steps at n_disc 3 are 6 D updates and 3 G updates (compare_gan v1's rule, as the
    unconditional trial counts them), as the optimisers' step counters in the checkpoint say."""
    config = TrialConfig(**FAST, task={"task": "superres"}, loss="ns_gan", terms=["l1"], steps=6, n_disc=3,
                         count="d_steps")
    result = run_trial(config, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert result.status == "completed" and result.steps_done == 6
    assert state["opt_d"]["state"][0]["step"] == 6 and state["opt_g"]["state"][0]["step"] == g_updates("d_steps", 6, 3) == 3


@pytest.mark.parametrize("task, expected_source_channels", [("colorize", 1), ("edges", 1), ("superres", 3)])
def test_colour_tasks_train_with_their_source_channels(tmp_path, task, expected_source_channels):
    """A folder of RGB images: colorize and edges feed G one channel and score three; the grid shows both."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(60):  # 12 test images (the folder's 10 %)
            pixels = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 16×16 blocks
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    folder = {**FAST, "dataset": "folder", "dataset_options": {"path": str(tmp_path / "images")}, "image_size": 16,
              "metrics": {"num_samples": 10, "kid": False, "isc": False}}
    config = TrialConfig(**folder, task={"task": task}, loss="ns_gan", terms=["l1"], steps=3)
    result = run_trial(config, tmp_path / "out")
    saved = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)["models"]
    assert result.status == "completed" and 0 <= result.rows[0]["ssim"] <= 1
    assert saved["G.stem.0.weight"].shape[1] == expected_source_channels  # G's first convolution
    assert saved["D.body.0.weight"].shape[1] == expected_source_channels + 3  # pix2pix's D: (source, image)
    unpaired_identity = dict(**folder, task={"task": task, "unpaired": True}, loss="ns_gan", terms=["identity"])
    if expected_source_channels == 3:
        TrialConfig(**unpaired_identity)  # G(b) ≈ b is defined when sources and targets have the same channels
    else:
        with pytest.raises(ValueError, match="identity feeds target-domain images to G"):
            TrialConfig(**unpaired_identity)


def trial_args(*extra: str) -> list[str]:
    return ["trial", "--dataset", "digits", "--steps", "2", "--num-samples", "100", "--no-progress", *extra]


def refused(capsys, argv, *expected):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def test_the_trial_command_runs_a_task(tmp_path, capsys):
    assert main(trial_args("--task", "denoise", "--task-option", "sigma=0.2", "--loss", "none", "--term", "l1=2",
                           "--out", str(tmp_path / "out"))) == 0
    out = capsys.readouterr().out
    assert "none on digits (denoise σ=0.2): completed" in out and "psnr" in out and "ssim" in out
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert saved["task"] == {"task": "denoise", "unpaired": False, "options": {"sigma": 0.2}}
    assert saved["model"] == "unet" and saved["loss_params"] == {"w_l1": 2}


@pytest.mark.parametrize("extra, expected", [
    (["--task", "superres", "--loss", "lsgan_raw", "--term", "cycle"], ["cycle", "unpaired"]),
    (["--task", "supres", "--loss", "none", "--term", "l1"], ["unknown task 'supres'", "superres"]),
    (["--task", "denoise", "--unpaired", "--loss", "none", "--term", "l1"], ["l1", "unpaired task"]),
    (["--task", "colorize", "--loss", "none", "--term", "l1"], ["colorize needs a colour dataset"]),
    (["--task", "superres", "--loss", "none"], ["loss none with no term"]),
    (["--task", "superres", "--loss", "none", "--term", "l1", "--term", "r1"], ["r1", "loss none has none"]),
    (["--task", "superres", "--task-option", "factor=3", "--loss", "none", "--term", "l1"], ["factor"]),
    (["--loss", "none"], ["loss none is for image-to-image tasks only"]),
    (["--loss", "ns_gan", "--term", "l1"], ["l1 is a term of image-to-image tasks"]),
    (["--unpaired"], ["--unpaired: give the task with --task"]),
    (["--task", "superres", "--loss", "none", "--term", "l1", "--amp"], ["amp", "image-to-image"]),
    (["--task", "superres", "--loss", "began"], ["began", "critic"]),
])
def test_bad_image_to_image_trials_are_refused_in_one_line(tmp_path, capsys, extra, expected):
    refused(capsys, trial_args("--out", str(tmp_path / "out"), *extra), *expected)
    assert not (tmp_path / "out").exists()


STUDY = {
    "name": "tiny-translation",
    "datasets": [{"name": "sr", "task": "superres", "dataset": "digits"},
                 {"name": "dn-unpaired", "task": "denoise", "dataset": "digits", "unpaired": True}],
    "losses": [{"name": "l1", "adversarial": "none", "g_terms": {"l1": 1.0}},
               {"name": "l1+adv", "adversarial": "ns_gan", "g_terms": {"l1": 10.0}},
               {"name": "cyclegan", "adversarial": "lsgan_raw", "g_terms": {"cycle": 10.0}}],
    "losses_per_dataset": {"sr": ["l1", "l1+adv"], "dn-unpaired": ["cyclegan"]},
    "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 3e-3}},
    "objective": "ssim",
    "batch_size": 16,
    "budget": {"samples": 2, "steps": 10, "evaluations": 2},
    "stages": ["search", "confirm"],
    "confirm": {"runs": 2},
    "metrics": {"num_samples": 100, "kid": False, "isc": False},
    "executor": {"name": "local", "workers": 1},
}


@pytest.mark.parametrize("change, expected", [
    ({"objective": "ssim", "datasets": ["digits"], "losses": ["ns_gan"], "losses_per_dataset": {}},
     "objective: ssim compares outputs with their true targets"),
    ({"losses_per_dataset": {"sr": ["l1"], "dn-unpaired": ["cyclegan"]}}, "l1+adv is trained on no dataset"),
    ({"losses_per_dataset": {}}, "losses: cyclegan on sr: terms[0]: cycle needs CycleGAN's two generators"),
    ({"losses_per_dataset": {"sr": ["l1", "l1+adv"], "dn-unpaired": ["cyclegan", "l1"]}},
     "losses_per_dataset.dn-unpaired: l1 on dn-unpaired: terms[0]: l1 compares each output with its true target"),
    ({"objective": "lpips"}, "objective"),
    ({"datasets": [{"name": "sr", "task": "superres", "dataset": "nope"}]}, "unknown dataset 'nope'"),
])
def test_bad_image_to_image_studies_are_refused_in_one_line(tmp_path, capsys, change, expected):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**STUDY, **change}))
    refused(capsys, ["validate", str(tmp_path / "s.yaml")], expected)


def test_a_translation_study_maximises_ssim_end_to_end(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    results = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "s.yaml"), "--results",
                          str(results), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(results / "results.csv")
    assert {"psnr", "ssim", "perceptual", "fid", "folder"} <= set(table.columns)
    assert sorted(set(zip(table["dataset"], table["loss"]))) == [("dn-unpaired", "cyclegan"), ("sr", "l1"),
                                                                  ("sr", "l1+adv")]
    search, confirmed = table[table["stage"] == "search"], table[table["stage"] == "confirm"]
    assert len(search) == 3 * 2 * 2 and len(confirmed) == 3 * 2 * 2 and table["ssim"].between(-1, 1).all()
    study = Study(**yaml.safe_load((results / "study.yaml").read_text()))
    storage, plan = open_storage(study, results), Plan(study)
    for part in plan.parts("search"):
        ostudy = optuna.load_study(study_name=part.optuna_name, storage=storage)
        assert ostudy.direction == optuna.study.StudyDirection.MAXIMIZE
        rows = search[(search["dataset"] == part.dataset) & (search["loss"] == part.loss)]
        best_per_trial = rows.groupby("trial")["ssim"].max()
        sample, _ = best_configuration(plan, storage, part.dataset, part.loss)
        assert sample == best_per_trial.idxmax()  # the highest SSIM, not the lowest
        assert ostudy.best_value == pytest.approx(best_per_trial.max())
        # The confirm stage re-trains that configuration.
        again = confirmed[(confirmed["dataset"] == part.dataset) & (confirmed["loss"] == part.loss)]
        assert (again["source_trial"] == sample).all() and again["seed"].nunique() == 2
    written = {p.name for p in results.iterdir()}
    assert {"summary.csv", "summary.md", "ssim_vs_budget.png", "samples.png", "confirm.csv", "confirm.md"} <= written
    confirm = pd.read_csv(results / "confirm.csv")
    assert {"ssim_mean", "ssim_std", "runs", "no_ssim"} <= set(confirm.columns) and (confirm["runs"] == 2).all()
    report = pd.read_csv(results / "summary.csv")
    assert {"best_ssim", "median_ssim", "no_ssim", "best_psnr", "median_psnr", "best_fid", "best_perceptual"} <= set(
        report.columns)
    sr_l1 = report[(report["dataset"] == "sr") & (report["loss"] == "l1")].iloc[0]
    assert sr_l1["best_ssim"] == pytest.approx(search[(search["dataset"] == "sr") & (search["loss"] == "l1")]["ssim"].max())
    assert (results / Path(table["folder"].iloc[0]) / "samples.png").is_file()


def test_the_summary_and_the_bootstrap_follow_a_maximised_objective():
    rows = [{"stage": "search", "dataset": "sr", "loss": "l1", "trial": t, "seed": 0, "step": s, "status": "completed",
             "ssim": v, "psnr": 20 + v, "fid": 10 - v} for t, (a, b) in enumerate([(0.2, 0.5), (0.7, 0.6), (0.3, 0.1)])
            for s, v in ((1, a), (2, b))]
    table = summary(pd.DataFrame(rows), "ssim").iloc[0]
    # Each trial's best is its highest SSIM (0.5, 0.7, 0.3); the best trial the highest of those.
    assert (table["best_ssim"], table["median_ssim"], table["best_trial"]) == (0.7, 0.5, 1)
    assert table["best_fid"] == pytest.approx(10 - 0.7) and table["best_psnr"] == pytest.approx(20.7)
    values = np.array([0.5, 0.7, 0.3, np.nan])
    median, low, high = best_of_k_bootstrap(values, 4, higher_is_better=True)
    assert (np.diff(median) >= 0).all() and (low <= median).all() and (median <= high).all()
    negated = best_of_k_bootstrap(-np.array([0.5, 0.7, 0.3, np.inf]), 4)
    assert np.array_equal(median, -negated[0]) and np.array_equal(low, -negated[2])
