"""A custom loss term, as README "Write your own loss" shows: `my_terms:moment_matching` in a study beside it."""

from bench.terms import Context, register


@register("g", needs=("features",))
def moment_matching(c: Context):
    """second-moment matching: ‖Var f(x) − Var f(G(z))‖², f = D's penultimate features"""
    return (c.real_features.detach().var(0) - c.fake_features.var(0)).square().sum()
