"""A metric of one's own, as README "Extending gan-bench" shows: `my_metrics:intensity_gap` in a study's
metrics.extra (and, since it may be one, its objective)."""

from torch import Tensor

from bench.metrics import metric


@metric(display="intensity gap", higher_is_better=False, objective=True)
def intensity_gap(generated: Tensor, real: Tensor) -> float:
    """|mean pixel of the samples − mean pixel of the real images| on [0, 1]: uint8 N×C×H×W images, the samples
    scored at the evaluation and the real images FID is computed against."""
    return abs(generated.double().mean().item() - real.double().mean().item()) / 255
