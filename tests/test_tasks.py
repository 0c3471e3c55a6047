"""bench.tasks: the image-to-image tasks, their specs, and the paired and unpaired samplers of training pairs."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from bench import BenchError, data, tasks
from bench.tasks import PairedSampler, TaskSpec, UnpairedSampler


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sources(task: str, targets: Tensor, seed: int = 0, **options: object) -> Tensor:
    return TaskSpec(task=task, options=options).make_sources(targets, _generator(seed))


@pytest.fixture(scope="module")
def digits() -> Tensor:
    """digits' first 200 training images at 16×16, float in [0, 1]."""
    return data.load("digits", 16).train[:200].float().div(255)


# registry


def test_registry_lists_the_tasks_with_one_line_descriptions() -> None:
    assert tasks.TASKS.names() == ["superres", "inpaint", "denoise", "edges", "colorize"]
    for name in tasks.TASKS.names():
        assert tasks.TASKS.get(name).description and "\n" not in tasks.TASKS.get(name).description
    assert dict(tasks.TASKS.get("superres").options) == {"factor": 2}
    assert dict(tasks.TASKS.get("inpaint").options) == {"hole": 0.5}
    assert dict(tasks.TASKS.get("denoise").options) == {"sigma": 0.3}
    assert not tasks.TASKS.get("edges").options and not tasks.TASKS.get("colorize").options


def test_register_adds_a_task_from_one_function(scratch_registry) -> None:
    scratch_registry(tasks, "TASKS")

    @tasks.register("invert", "negative to image")
    def invert(targets: Tensor, generator: torch.Generator, *, amount: float = 1.0) -> Tensor:
        return (amount * (1 - targets) + (1 - amount) * targets).clamp(0, 1)

    spec = TaskSpec(task="invert", options={"amount": 1})
    assert spec.options == {"amount": 1.0} and spec.label == "invert amount=1.0"
    assert torch.equal(spec.make_sources(torch.zeros(2, 1, 8, 8), _generator()), torch.ones(2, 1, 8, 8))
    with pytest.raises(ValidationError, match="amount: input should be a valid number"):
        TaskSpec(task="invert", options={"amount": "all"})
    with pytest.raises(BenchError, match="registered twice"):
        tasks.register("invert", "again")(invert)


# every task: shapes, channels, range


@pytest.mark.parametrize(("name", "channels"), [(name, c) for name in tasks.TASKS.names() for c in (1, 3)
                                               if not (name == "colorize" and c == 1)])  # colour images only
def test_sources_have_the_task_s_shape_channels_and_range(name: str, channels: int) -> None:
    spec = TaskSpec(task=name)
    targets = torch.rand(5, channels, 16, 16, generator=_generator(1))
    sources = spec.make_sources(targets, _generator())
    expected = 1 if name in ("edges", "colorize") else channels
    assert spec.source_channels(channels) == expected
    assert sources.shape == (5, expected, 16, 16) and sources.dtype == torch.float32
    assert 0 <= sources.min() and sources.max() <= 1
    assert not torch.equal(sources, targets[:, :expected])


@pytest.mark.parametrize("name", ["superres", "inpaint", "denoise", "edges"])
def test_same_seed_same_sources(name: str, digits: Tensor) -> None:
    assert torch.equal(_sources(name, digits, seed=3), _sources(name, digits, seed=3))


@pytest.mark.parametrize("name", ["inpaint", "denoise"])
def test_the_random_tasks_draw_on_the_generator(name: str, digits: Tensor) -> None:
    assert not torch.equal(_sources(name, digits, seed=3), _sources(name, digits, seed=4))


# superres


@pytest.mark.parametrize("factor", [2, 4])
def test_superres_of_a_constant_image_is_that_image(factor: int) -> None:
    targets = torch.full((2, 3, 16, 16), 0.37)
    assert torch.allclose(_sources("superres", targets, factor=factor), targets, atol=1e-6)


def test_superres_x4_loses_more_detail_than_x2(digits: Tensor) -> None:
    x2 = (_sources("superres", digits, factor=2) - digits).square().mean()
    x4 = (_sources("superres", digits, factor=4) - digits).square().mean()
    assert 0 < x2 < x4 / 1.5


def test_superres_needs_a_side_divisible_by_the_factor() -> None:
    spec = TaskSpec(task="superres", options={"factor": 4})
    spec.check((1, 16, 16))
    with pytest.raises(BenchError, match="divisible by 4") as info:
        spec.check((1, 18, 18))
    assert "\n" not in str(info.value)
    TaskSpec(task="superres").check((1, 18, 18))


# inpaint


@pytest.mark.parametrize(("hole", "side", "size"), [(0.25, 4, 16), (0.5, 14, 28), (0.9, 14, 16)])
def test_inpaint_fills_exactly_one_square_hole_grey(hole: float, side: int, size: int) -> None:
    targets = torch.rand(50, 3, size, size, generator=_generator(2)) * 0.4  # never the 0.5 fill
    sources = _sources("inpaint", targets, hole=hole)
    changed = sources != targets
    assert (changed == changed[:, :1]).all()  # the same pixels in every channel
    corners = set()
    for mask, image in zip(changed[:, 0], sources):
        rows, cols = mask.nonzero().unbind(1)
        top, left = rows.min().item(), cols.min().item()
        assert mask.sum() == side * side and mask[top : top + side, left : left + side].all()
        assert (image[:, mask] == 0.5).all()
        corners.add((top, left))
    assert len(corners) > 10 or size - side < 3  # the hole moves from image to image


# denoise


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_denoise_noise_has_standard_deviation_sigma(sigma: float) -> None:
    targets = torch.full((64, 1, 32, 32), 0.5)
    noise = _sources("denoise", targets, sigma=sigma) - targets
    assert abs(noise.std().item() - sigma) < 0.03 * sigma and abs(noise.mean().item()) < 0.03 * sigma


def test_denoise_clamps_to_the_unit_range() -> None:
    sources = _sources("denoise", torch.full((8, 1, 16, 16), 0.9), sigma=0.5)
    assert sources.max() == 1 and sources.min() >= 0


# edges


@pytest.mark.parametrize("value", [0.0, 0.7, 1.0])
def test_edges_of_a_constant_image_are_zero(value: float) -> None:
    assert torch.equal(_sources("edges", torch.full((2, 3, 12, 12), value)), torch.zeros(2, 1, 12, 12))


def test_edges_light_up_a_vertical_step_and_nothing_else() -> None:
    targets = torch.zeros(1, 1, 16, 16)
    targets[..., 8:] = 0.6
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 7:9] = 1  # the two columns whose 3×3 Sobel window straddles the step
    assert torch.allclose(_sources("edges", targets), expected)


def test_edges_are_deterministic_and_read_the_luma_of_colour_images() -> None:
    rgb = torch.rand(3, 3, 16, 16, generator=_generator(5))
    grey = rgb[:, :1] * 0.299 + rgb[:, 1:2] * 0.587 + rgb[:, 2:] * 0.114
    assert torch.equal(_sources("edges", rgb, seed=0), _sources("edges", rgb, seed=1))
    assert torch.allclose(_sources("edges", rgb), _sources("edges", grey), atol=1e-5)


# colorize


def test_colorize_is_the_luma() -> None:
    rgb = torch.rand(4, 3, 8, 8, generator=_generator(6))
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert torch.allclose(_sources("colorize", rgb)[:, 0], expected, atol=1e-6)


def test_colorize_rejects_a_grey_dataset_in_one_line() -> None:
    spec = TaskSpec(task="colorize")
    spec.check((3, 32, 32))
    with pytest.raises(BenchError) as info:
        spec.check((1, 28, 28))
    assert str(info.value) == "colorize needs a colour dataset (3 channels); 1×28×28 has 1"
    with pytest.raises(BenchError, match="colour dataset"):
        spec.make_sources(torch.rand(2, 1, 8, 8), _generator())


# TaskSpec


@pytest.mark.parametrize(("spec", "message"), [
    ({"task": "supres"}, "unknown task 'supres'; valid: superres, inpaint, denoise, edges, colorize"),
    ({"task": "superres", "options": {"factr": 2}}, "unknown option 'factr' for task 'superres'; valid: factor"),
    ({"task": "edges", "options": {"sigma": 1}}, "unknown option 'sigma' for task 'edges'; valid: none"),
    ({"task": "superres", "options": {"factor": 3}}, "factor: input should be 2 or 4, got 3"),
    ({"task": "superres", "options": {"factor": True}}, "factor: input should be 2 or 4, got True"),
    ({"task": "inpaint", "options": {"hole": 0}}, "hole: input should be greater than 0, got 0"),
    ({"task": "inpaint", "options": {"hole": 1.0}}, "hole: input should be less than 1, got 1.0"),
    ({"task": "denoise", "options": {"sigma": -0.1}}, "sigma: input should be greater than 0, got -0.1"),
    ({"task": "denoise", "options": {"sigma": float("inf")}}, "sigma: input should be a finite number, got inf"),
    ({"task": "denoise", "options": {"sigma": "0.3"}}, "sigma: input should be a valid number, got '0.3'"),
    ({"task": "denoise", "paired": False}, "Extra inputs are not permitted"),
])
def test_bad_specs_are_one_line_naming_the_problem(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TaskSpec(**spec)
    errors = info.value.errors()
    assert len(errors) == 1 and errors[0]["msg"].removeprefix("Value error, ") == message


def test_spec_converts_options_and_round_trips() -> None:
    spec = TaskSpec(task="denoise", unpaired=True, options={"sigma": 1})
    assert spec.options == {"sigma": 1.0} and isinstance(spec.options["sigma"], float)
    assert TaskSpec(**spec.model_dump(mode="json")) == spec
    assert TaskSpec(task="inpaint").option_values == {"hole": 0.5}


@pytest.mark.parametrize(("spec", "label"), [
    ({"task": "superres", "options": {"factor": 4}}, "superres x4"),
    ({"task": "superres"}, "superres x2"),
    ({"task": "denoise", "unpaired": True}, "denoise σ=0.3 unpaired"),
    ({"task": "inpaint", "options": {"hole": 0.25}}, "inpaint hole=0.25"),
    ({"task": "colorize"}, "colorize"),
])
def test_label(spec: dict, label: str) -> None:
    assert TaskSpec(**spec).label == label


# samplers


def test_paired_sampler_draws_each_source_with_its_own_target() -> None:
    sampler = tasks.sampler(TaskSpec(task="superres"), 100, _generator())
    assert isinstance(sampler, PairedSampler)
    for _ in range(20):
        source, target = sampler.draw(32)
        assert torch.equal(source, target) and source.shape == (32,)
        assert 0 <= source.min() and source.max() < 100


@pytest.mark.parametrize("n_train", [1001, 4000])
def test_unpaired_halves_are_disjoint_cover_the_split_and_ignore_the_trial_seed(n_train: int) -> None:
    sampler = tasks.sampler(TaskSpec(task="denoise", unpaired=True), n_train, _generator(1))
    assert isinstance(sampler, UnpairedSampler)
    sources, targets = set(sampler.source_pool.tolist()), set(sampler.target_pool.tolist())
    assert not sources & targets and sources | targets == set(range(n_train))
    assert abs(len(sources) - len(targets)) <= 1
    other = UnpairedSampler(n_train, _generator(2))
    assert torch.equal(other.source_pool, sampler.source_pool) and torch.equal(other.target_pool, sampler.target_pool)


def test_unpaired_draws_never_contain_a_true_pair() -> None:
    sampler = UnpairedSampler(500, _generator(3))
    sources, targets = set(sampler.source_pool.tolist()), set(sampler.target_pool.tolist())
    drawn_sources, drawn_targets = set(), set()
    for _ in range(300):
        source, target = sampler.draw(64)
        assert source.shape == target.shape == (64,)
        assert not (source == target).any()
        drawn_sources.update(source.tolist())
        drawn_targets.update(target.tolist())
    assert drawn_sources <= sources and drawn_targets <= targets
    assert not drawn_sources & drawn_targets  # no image is ever both a source and a real target
    assert len(drawn_sources) == len(sources) and len(drawn_targets) == len(targets)  # both halves are used


def test_draws_follow_the_trial_generator() -> None:
    for kind in (PairedSampler, UnpairedSampler):
        first, again, other = (kind(300, _generator(seed)).draw(16) for seed in (7, 7, 8))
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert not torch.equal(first[0], other[0])


def test_unpaired_needs_two_images() -> None:
    with pytest.raises(BenchError, match="two training images"):
        UnpairedSampler(1, _generator())


# test pairs


@pytest.mark.parametrize("unpaired", [False, True])
def test_test_pairs_are_fixed_true_pairs(digits: Tensor, unpaired: bool) -> None:
    spec = TaskSpec(task="inpaint", unpaired=unpaired)
    torch.manual_seed(1)
    first = tasks.test_pairs(spec, digits, seed=11)
    torch.manual_seed(2)  # neither torch's global generator nor any trial's is read
    assert torch.equal(tasks.test_pairs(spec, digits, seed=11), first)
    assert torch.equal(first, spec.make_sources(digits, _generator(11)))  # the i-th source is made from target i
    assert not torch.equal(tasks.test_pairs(spec, digits, seed=12), first)
    superres = TaskSpec(task="superres", unpaired=unpaired)
    assert torch.equal(tasks.test_pairs(superres, digits, seed=0), tasks.superres(digits, _generator()))
