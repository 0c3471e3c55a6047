"""A loss of one's own, as README "Extending gan-bench" shows: `my_losses:softplus_hinge` in a study beside it."""

import torch.nn.functional as F
from torch import Tensor


def softplus_hinge(real: Tensor, fake: Tensor, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """A smooth hinge: D minimises E softplus(margin − D(x)) + E softplus(margin + D(G(z))), G minimises −E D(G(z)).
    `margin`, a keyword argument with a default, is the loss's own hyperparameter: a study may search it."""
    d_loss = F.softplus(margin - real).mean() + F.softplus(margin + fake).mean()
    return d_loss, -fake.mean()
