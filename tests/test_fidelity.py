"""Fidelity to compare_gan v1, the code of "Are GANs Created Equal?": step counting, the generator's fresh latent,
BEGAN's k schedule, RMSProp as TensorFlow 1 had it, and each model's default configuration in the paper's studies."""

from __future__ import annotations

import math

import pytest
import torch

from bench import gan, kind, losses
from bench.plan import Plan
from bench.study import load_study
from bench.config import TrialConfig, g_updates, step_updates
from bench.trial import run_trial


def planned_samples(study, dataset, loss):
    """The (params, overrides) of each sample the study plans for (dataset, loss), the default first."""
    return Plan(study).part("search", dataset, loss).planned_samples()


QUICK = {"dataset": "digits", "metrics": {"num_samples": 100, "kid": False, "isc": False}}


def _count_updates(monkeypatch) -> dict[str, int]:
    """Counts optimizer steps of G and D (run_trial makes G's optimizer first) and records both counts at each
    evaluation."""
    counts = {"G": 0, "D": 0, "at_eval": []}
    make = kind.make_optimizer
    made = []

    def counting(params, config):
        optimizer = make(params, config)
        name = "GD"[len(made) % 2]
        made.append(name)
        optimizer.register_step_post_hook(lambda *_: counts.__setitem__(name, counts[name] + 1))
        return optimizer

    score = gan.Scorer.score

    def scoring(self, sample):
        counts["at_eval"].append((counts["D"], counts["G"]))
        return score(self, sample)

    monkeypatch.setattr(gan, "make_optimizer", counting)
    monkeypatch.setattr(gan.Scorer, "score", scoring)
    return counts


def test_d_steps_count_discriminator_updates_as_v1(tmp_path, monkeypatch):
    # v1 abstract_gan.py 207: G follows D on the first step and on every step t (from 0) with (t - 1) % 5 == 0:
    # t = 0, 1, 6, 11, ..., 96, so 100 steps are 100 D and 21 G updates (20 without the first step's).
    counts = _count_updates(monkeypatch)
    config = TrialConfig(**QUICK, loss="ns_gan", n_disc=5, steps=100, count="d_steps", eval_steps=[50, 100])
    result = run_trial(config, tmp_path)
    assert (counts["D"], counts["G"]) == (100, 21)
    # Evaluation steps count in the same unit: after 50 D updates, G has had t = 0, 1, 6, ..., 46: 11.
    assert counts["at_eval"] == [(50, 11), (100, 21)]
    assert [row["step"] for row in result.rows] == [50, 100]
    assert g_updates("d_steps", 100, 5) == 21 and g_updates("d_steps", 100, 1) == 100


def test_g_steps_count_generator_updates(tmp_path, monkeypatch):
    counts = _count_updates(monkeypatch)
    config = TrialConfig(**QUICK, loss="ns_gan", n_disc=5, steps=20, count="g_steps", eval_steps=[20])
    run_trial(config, tmp_path)
    assert (counts["D"], counts["G"]) == (100, 20)
    assert g_updates("g_steps", 20, 5) == 20


def test_the_paper_mnist_budget():
    # 15,625 steps of MNIST: 15,625 D updates; G 15,625 at n_disc 1 and 3,126 at n_disc 5 (3,125 + the first step).
    assert g_updates("d_steps", 15625, 1) == 15625
    assert g_updates("d_steps", 15625, 5) == 3126
    assert sum(step_updates("d_steps", s, 5)[1] for s in range(1, 15626)) == 3126


def test_a_d_steps_trial_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    # Interrupted after the first evaluation at a step without a G update (step 50: t = 49, (49 - 1) % 5 != 0), the
    # trial must resume to exactly the uninterrupted metrics: the last G loss travels in the checkpoint.
    config = TrialConfig(**QUICK, loss="wgan_gp", n_disc=5, steps=80, count="d_steps", eval_steps=[50, 80])
    whole = run_trial(config, tmp_path / "whole")
    score = gan.Scorer.score
    calls = []

    def crash_on_second(self, sample):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(self, sample)

    monkeypatch.setattr(gan.Scorer, "score", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, tmp_path / "resumed")
    monkeypatch.setattr(gan.Scorer, "score", score)
    resumed = run_trial(config, tmp_path / "resumed")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert strip(resumed.rows) == strip(whole.rows)


def _count_generator_forwards(monkeypatch) -> list[torch.Tensor]:
    """Records the latent of every training-mode forward of G."""
    latents = []
    build = gan.models.build

    def recording(*args, **kwargs):
        G, D = build(*args, **kwargs)
        G.register_forward_pre_hook(lambda module, inputs: latents.append(inputs[0].clone()) if module.training
                                    else None)
        return G, D

    monkeypatch.setattr(gan.models, "build", recording)
    return latents


@pytest.mark.parametrize("loss, fresh", [("wgan_gp", True), ("ns_gan", False)])
def test_only_wgan_gp_draws_a_fresh_latent_for_the_generator_step(tmp_path, monkeypatch, loss, fresh):
    # v1 WGAN_GP.py 111-112 (resample_before_generator) and abstract_gan.py 208-215: z is drawn again before G's
    # update for WGAN-GP; every other model updates G on the D step's z.
    latents = _count_generator_forwards(monkeypatch)
    config = TrialConfig(**QUICK, loss=loss, n_disc=5, steps=10, count="d_steps", eval_steps=[10])
    run_trial(config, tmp_path)
    g_steps = g_updates("d_steps", 10, 5)  # steps 1, 2 and 7
    assert len(latents) == 10 + (g_steps if fresh else 0)
    if fresh:  # the forward after step 1's D forward is G's own, on a different z
        assert not torch.equal(latents[0], latents[1])


def test_began_k_is_updated_after_every_step_unclipped_from_the_updated_networks(tmp_path, monkeypatch):
    # v1 BEGAN.py 130-131 and 162-169: after every training step (G updated or not), k += lambda_k (gamma L(x) -
    # L(G(z))) with errors the updated networks make on the step's batch and z; k starts at 0 and is never clipped.
    recorded, d_inputs, nets = [], [], []
    update = losses.began_update_k
    build = gan.models.build

    def recording_build(*args, **kwargs):
        G, D = build(*args, **kwargs)
        D.register_forward_pre_hook(lambda module, inputs: d_inputs.append(inputs[0].detach().clone()))
        nets.append(D)
        return G, D

    def spy(k, real_error, fake_error, gamma, lambda_k):
        # The errors must be what D, as it is now (after this step's updates), makes on the step's own batch.
        x, fake_now = d_inputs[-2], d_inputs[-1]
        with torch.no_grad():
            assert real_error == pytest.approx(losses.reconstruction_error(x, nets[0](x)).item(), rel=1e-6)
            assert fake_error == pytest.approx(losses.reconstruction_error(fake_now, nets[0](fake_now)).item(),
                                               rel=1e-6)
        recorded.append((k, real_error, fake_error))
        return update(k, real_error, fake_error, gamma, lambda_k)

    monkeypatch.setattr(gan.models, "build", recording_build)
    monkeypatch.setattr(gan.losses, "began_update_k", spy)
    gamma, lambda_k = 1.0, 5.0  # large enough for k to leave [0, 1] within three steps
    config = TrialConfig(**QUICK, loss="began", n_disc=5, steps=3, count="d_steps", eval_steps=[3],
                         began_gamma=gamma, began_lambda_k=lambda_k)
    run_trial(config, tmp_path)
    assert len(recorded) == 3  # steps 1 and 2 update G, step 3 does not: k is updated on all three
    # By hand: k_0 = 0, k_{i+1} = k_i + 5 (L(x_i) - L(G(z_i))).
    (k0, r1, f1), (k1, r2, f2), (k2, r3, f3) = recorded
    assert k0 == 0.0
    assert k1 == pytest.approx(lambda_k * (gamma * r1 - f1))
    assert k2 == pytest.approx(k1 + lambda_k * (gamma * r2 - f2))
    k3 = k2 + lambda_k * (gamma * r3 - f3)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["k"] == pytest.approx(k3)
    assert not all(0 <= k <= 1 for k in (k1, k2, k3))  # unclipped


def test_rmsprop_is_tensorflow_1s():
    # tf.train.RMSPropOptimizer(lr): ms starts at 1, ms <- 0.9 ms + 0.1 g^2, w <- w - lr g / sqrt(ms + 1e-10).
    config = TrialConfig(**QUICK, loss="wgan", optimizer="rmsprop", lr=0.01).resolved()
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    optimizer = kind.make_optimizer([w], config)
    expected, ms = w.detach().clone(), torch.ones(3, dtype=torch.float64)
    for g in ([0.5, -1.0, 4.0], [0.1, 0.2, -0.3]):
        g = torch.tensor(g, dtype=torch.float64)
        w.grad = g.clone()
        optimizer.step()
        ms = 0.9 * ms + 0.1 * g**2
        expected -= 0.01 * g / (ms + 1e-10).sqrt()
        assert torch.allclose(w.detach(), expected, rtol=1e-9, atol=0)
    assert isinstance(kind.make_optimizer([w], TrialConfig(**QUICK).resolved()), torch.optim.Adam)


# Each model's default configuration in the narrow study, as v1's params.py gives it (the paper's narrow range
# fixes beta1 = 0.5 and n_disc = 1, with lr in [1e-4, 1e-3]; the defaults are used even outside it).
V1_NARROW_DEFAULTS = {
    "mm_gan": {"lr": 5e-5, "beta1": 0.0, "n_disc": 1, "d_batchnorm": True},  # lines 107-113
    "ns_gan": {"lr": 5e-5, "beta1": 0.0, "n_disc": 1, "d_batchnorm": True},
    "lsgan": {"lr": 2e-4, "beta1": 0.5, "n_disc": 1, "d_batchnorm": True},  # 123-129
    "wgan": {"lr": 5e-5, "beta1": 0.5, "n_disc": 5, "d_batchnorm": True, "clip": 0.01},  # 139-150
    "wgan_gp": {"lr": 1e-4, "beta1": 0.5, "n_disc": 5, "d_batchnorm": False, "gp_lambda": 10.0},  # 160-172
    "dragan": {"lr": 1e-4, "beta1": 0.5, "n_disc": 1, "d_batchnorm": True, "gp_lambda": 10.0},  # 182-194
    "vae": {"lr": 5e-5, "beta1": 0.5, "d_batchnorm": False},  # 204-210
    "began": {"lr": 1e-4, "beta1": 0.5, "n_disc": 5, "d_batchnorm": False, "began_lambda_k": 1e-3,
              "began_gamma": 0.75},  # 220-237
}
V1_WIDE_BATCHNORM = {"mm_gan": True, "ns_gan": True, "lsgan": True, "wgan": True, "wgan_gp": False, "dragan": True,
                     "vae": True, "began": False}


def _default_config(study, loss):
    params, overrides = planned_samples(study, study.datasets[0], loss)[0]
    return {**study.fixed_params(loss), **overrides, **params}


@pytest.mark.parametrize("loss", list(V1_NARROW_DEFAULTS))
def test_the_narrow_studys_default_sample_is_v1s_even_outside_the_range(loss):
    study = load_study("studies/are_gans_equal_narrow.yaml")
    default = _default_config(study, loss)
    assert {k: default[k] for k in V1_NARROW_DEFAULTS[loss]} == V1_NARROW_DEFAULTS[loss]
    # Every other sample stays inside the narrow range.
    for params, overrides in planned_samples(study, "mnist", loss)[1:5]:
        sample = {**study.fixed_params(loss), **params}
        assert not overrides and sample["beta1"] == 0.5 and 1e-4 <= sample["lr"] <= 1e-3
        assert loss == "vae" or sample["n_disc"] == 1
        if loss in ("wgan_gp", "dragan"):
            assert sample["d_batchnorm"] is False  # fixed off in the narrow range (params.py 165-167, 187-189)


@pytest.mark.parametrize("loss", list(V1_WIDE_BATCHNORM))
def test_the_wide_studys_default_sample_is_v1s(loss):
    study = load_study("studies/are_gans_equal.yaml")
    params, overrides = planned_samples(study, "mnist", loss)[0]
    assert not overrides  # every wide default lies inside the wide range
    expected = {k: v for k, v in V1_NARROW_DEFAULTS[loss].items()}
    expected["d_batchnorm"] = V1_WIDE_BATCHNORM[loss]
    assert {k: params[k] for k in expected} == expected
    assert study.budget.count == "d_steps"


def test_a_default_sample_outside_the_range_runs_with_its_own_values(tmp_path):
    # The runner applies overrides as they are: WGAN's default n_disc 5 in a study that fixes n_disc 1.
    import yaml

    from bench.cli import main

    study = {"name": "narrowish", "datasets": ["digits"], "losses": ["wgan"], "model": "mlp",
             "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}, "n_disc": 1, "beta1": 0.5},
             "budget": {"samples": 2, "steps": 10, "count": "d_steps"},
             "metrics": {"num_samples": 100, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 1}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "r" / "results.csv")
    by_trial = table.groupby("trial").first()
    assert by_trial.loc[0, "param_n_disc"] == 5 and by_trial.loc[0, "param_lr"] == 5e-5  # v1's WGAN default
    assert by_trial.loc[1, "param_n_disc"] == 1 and 1e-4 <= by_trial.loc[1, "param_lr"] <= 1e-3


def test_validate_prints_d_and_g_updates_per_n_disc(capsys):
    from bench.cli import main

    assert main(["validate", "studies/are_gans_equal.yaml"]) == 0
    out = capsys.readouterr().out
    assert "mnist          15,625 steps: n_disc 1: 15,625 D / 15,625 G, n_disc 5: 15,625 D / 3,126 G" in out
    assert "celeba         101,250 steps: n_disc 1: 101,250 D / 101,250 G, n_disc 5: 101,250 D / 20,251 G" in out
    assert math.ceil(101249 / 5) + 1 == 20251


def _tiny(name, **changes):
    study = {"name": name, "datasets": ["digits"], "losses": ["ns_gan"], "model": "mlp",
             "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}},
             "budget": {"samples": 3, "steps": 10, "count": "d_steps"},
             "metrics": {"num_samples": 100, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 1}}
    study.update(changes)
    return study


def test_a_confirm_stage_can_confirm_another_studys_search(tmp_path, capsys):
    # The paper's table re-runs the best configuration of the *wide* search (v1 generate_tasks_lib.py Phase3Auto),
    # whatever the narrow search found.
    import pandas as pd
    import yaml

    from bench.cli import main

    def run(study, results):
        path = tmp_path / f"{study['name']}.yaml"
        path.write_text(yaml.safe_dump(study))
        return main(["run", str(path), "--results", str(tmp_path / results), "--no-progress"])

    assert run(_tiny("wide"), "wide") == 0
    wide = pd.read_csv(tmp_path / "wide" / "results.csv")
    best = wide.groupby("trial")["fid"].min().idxmin()
    best_lr = wide.loc[wide["trial"] == best, "param_lr"].iloc[0]

    narrow = _tiny("narrow", search_space={"lr": 3e-3}, stages=["search", "confirm"],
                   confirm={"runs": 2, "source": str(tmp_path / "wide")})
    # A source trained differently is refused in one line, before anything is written.
    capsys.readouterr()
    assert run({**narrow, "budget": {"samples": 3, "steps": 12, "count": "d_steps"}}, "bad") == 2
    err = capsys.readouterr().err.strip()
    assert "confirm.source" in err and "budget.steps is 10 there, 12 here" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()
    assert run({**narrow, "confirm": {"runs": 2, "source": str(tmp_path / "nowhere")}}, "bad") == 2
    assert "confirm.source" in capsys.readouterr().err and not (tmp_path / "bad").exists()

    assert run(narrow, "narrow") == 0
    table = pd.read_csv(tmp_path / "narrow" / "results.csv")
    confirm = table[table["stage"] == "confirm"]
    assert sorted(confirm["seed"].unique()) == [1000, 1001]
    assert (confirm["source_trial"] == best).all() and (confirm["param_lr"] == best_lr).all()
    search = table[table["stage"] == "search"]
    assert (search.loc[search["trial"] > 0, "param_lr"] == 3e-3).all()  # its own search is its own
    assert (search.loc[search["trial"] == 0, "param_lr"] == 5e-5).all()  # the default sample: NS GAN's v1 lr


def test_the_adam_vs_rmsprop_experiment_is_a_paired_study_file():
    # v1 AdamVsRmsprop (generate_tasks_lib.py 202-218): the same WGAN tasks, once with each optimizer.
    study = load_study("studies/adam_vs_rmsprop.yaml")
    assert study.losses == ["wgan", "wgan_rmsprop"] and study.datasets == ["cifar10", "celeba"]
    for dataset in study.datasets:
        assert planned_samples(study, dataset, "wgan") == planned_samples(study, dataset, "wgan_rmsprop")
    assert study.trial_fields("cifar10", "wgan_rmsprop")["loss"] == "wgan"
    assert study.fixed_params("wgan_rmsprop") == {"optimizer": "rmsprop"} and study.fixed_params("wgan") == {}


def test_a_variant_trains_its_loss_with_its_fixed_parameters(tmp_path):
    import pandas as pd
    import yaml

    from bench.cli import main

    study = _tiny("paired", losses=["wgan", "wgan_rmsprop"], budget={"samples": 2, "steps": 6, "count": "d_steps"},
                  variants={"wgan_rmsprop": {"loss": "wgan", "params": {"optimizer": "rmsprop"}}})
    path = tmp_path / "paired.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    table = pd.read_csv(tmp_path / "r" / "results.csv").set_index(["loss", "trial"])
    assert (table.loc["wgan", "param_optimizer"] == "adam").all()
    assert (table.loc["wgan_rmsprop", "param_optimizer"] == "rmsprop").all()
    assert table.loc["wgan", "param_lr"].tolist() == table.loc["wgan_rmsprop", "param_lr"].tolist()  # paired
    assert table.loc[("wgan_rmsprop", 0), "param_n_disc"] == 5  # WGAN's default sample, with RMSProp
    assert not any(":" in p.name or "[" in p.name for p in (tmp_path / "r" / "trials").iterdir())


@pytest.mark.parametrize("variants, losses, expected", [
    ({"w2": {"loss": "nope", "params": {"optimizer": "rmsprop"}}}, ["w2"], "variants.w2.loss: unknown loss 'nope'"),
    ({"w 2": {"loss": "wgan", "params": {"optimizer": "rmsprop"}}}, ["wgan"], "variants: w 2: a variant's name"),
    ({"wgan_gp": {"loss": "wgan", "params": {"optimizer": "rmsprop"}}}, ["wgan_gp"], "already the name of a"),
    ({"w2": {"loss": "wgan", "params": {"optimiser": "rmsprop"}}}, ["w2"], "w2.params.optimiser: unknown hyper"),
    ({"w2": {"loss": "wgan", "params": {}}}, ["w2"], "variants.w2.params: Dictionary should have at least 1"),
    ({"w2": {"loss": "wgan", "params": {"optimizer": "sgd"}}}, ["w2"],
     "variants.w2.params.optimizer: Input should be 'adam' or 'rmsprop'"),
    ({"w2": {"loss": "wgan", "params": {"optimizer": "rmsprop"}}}, ["wgan"], "variants.w2: not one of the study's"),
])
def test_bad_variants_are_named_in_one_line(tmp_path, capsys, variants, losses, expected):
    import yaml

    from bench.cli import main

    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(_tiny("v", variants=variants, losses=losses)))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err
