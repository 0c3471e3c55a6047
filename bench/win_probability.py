"""Who beats whom, and how sure: the probability that loss A's best score among k random trials beats loss B's.

Lucic et al. compare losses by the best score reached with a budget of k hyperparameter samples. Drawn from the
trials a study ran (with replacement, each trial equally likely), the best of k draws from an empirical distribution
with survival S(v) = P(score worse than v) is worse than v with probability S(v)^k, so it equals the j-th smallest
pooled score v_j with probability S(v_{j-1})^k − S(v_j)^k, and

    P(A's best of k beats B's best of k) = Σ_j P(best_A = v_j) · (S_B(v_j)^k + ½ P(best_B = v_j)),

ties counted ½. At k = 1 this is Agarwal et al.'s (NeurIPS 2021) probability of improvement on one task, the
Mann–Whitney U divided by n_A·n_B (`rliable.metrics.probability_of_improvement`). A trial without a finite score
(diverged, FID +∞) is worse than any finite one, and ties with another such trial.

The interval is a percentile bootstrap over trials, each loss's trials resampled on their own (rliable's
`get_interval_estimates` on a pair of arrays). A resample is counted per pooled score, so every resample's
probability is exact too, for every k at once. For k near the number of trials the best
of k is an extreme of the sample and its bootstrap loses coverage: `reliable_budget` says how far k may go.

Pure numpy on arrays of scores: nothing here knows of results files or losses' names."""

from __future__ import annotations

import math

import numpy as np

# A percentile bootstrap's resamples: the 2.5 % and 97.5 % quantiles of 1,000 resamples move by about a tenth of the
# bootstrap's standard deviation between seeds (about 0.005 at 100 trials per loss), small next to the interval.
RESAMPLES = 1000


def costs(scores: np.ndarray, higher_is_better: bool = False) -> np.ndarray:
    """Scores as costs, lower better: negated when higher is better; NaN and ±inf (no finite score) become +inf,
    worse than any finite one."""
    values = np.asarray(scores, dtype=float)
    values = -values if higher_is_better else values
    return np.where(np.isfinite(values), values, np.inf)


def budgets(ks: int | np.ndarray) -> np.ndarray:
    """`ks` as a 1-D array of budgets, checked: whole numbers ≥ 1, increasing."""
    ks = np.atleast_1d(np.asarray(ks))
    if ks.ndim != 1 or not len(ks) or np.any(ks != np.round(ks)) or ks[0] < 1 or np.any(np.diff(ks) <= 0):
        raise ValueError(f"budgets must be increasing whole numbers >= 1, got {ks.tolist()}")
    return ks.astype(int)


def reliable_budget(n_a: int, n_b: int) -> int:
    """The largest budget k whose bootstrap interval keeps its coverage for losses with n_a and n_b trials (at
    least 1): ⌊√n⌋, n the smaller count.

    Simulated (tests/test_win_probability.py; pairs of normal and of lognormal score distributions, n = 20 to 400
    trials a loss), the 95 % interval covered the true value 91.5–96 % of the time at k ≤ √n. No fixed share of n
    does: the coverage at k = n/4 fell from 90–94 % at n ≤ 100 to 87 % at n = 200 and 400, and at k = n to 60–91 %."""
    return max(1, math.isqrt(min(n_a, n_b)))


def _survivals(counts: np.ndarray) -> np.ndarray:
    """(..., L) counts of trials at each pooled level → (..., L) shares of trials worse than each level."""
    return 1.0 - np.cumsum(counts, axis=-1) / counts.sum(axis=-1, keepdims=True)


def _from_survivals(survival_a: np.ndarray, survival_b: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """P(A's best of k beats B's) from the two survivals over the pooled levels (..., L), for each k of the
    increasing `ks`: (..., K).

    With A_j = S_A(v_j)^k (A's best of k worse than level j) and A_0 = 1, P(best_A = v_j) = A_{j−1} − A_j, and the
    sum Σ_j P(best_A = v_j)·(B_j + ½ P(best_B = v_j)) is ½ Σ_j (A_{j−1} − A_j)(B_{j−1} + B_j): fewer passes over
    the (resamples, levels) arrays, which is where the bootstrap spends its time."""
    out = np.empty(survival_a.shape[:-1] + (len(ks),), dtype=survival_a.dtype)
    shape = survival_a.shape[:-1] + (survival_a.shape[-1] + 1,)
    # Column 0: nothing is worse than "below every level".
    worse_a, worse_b = np.ones(shape, survival_a.dtype), np.ones(shape, survival_b.dtype)
    power = 0
    for i, k in enumerate(ks):  # one k at a time: (resamples, levels) arrays, never (resamples, budgets, levels)
        for _ in range(int(k) - power):  # S^k from the last k's by products (pow costs far more per element)
            worse_a[..., 1:] *= survival_a
            worse_b[..., 1:] *= survival_b
        power = int(k)
        at_a = worse_a[..., :-1] - worse_a[..., 1:]
        out[..., i] = 0.5 * np.einsum("...j,...j->...", at_a, worse_b[..., :-1] + worse_b[..., 1:])
    return out


def _pooled_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two losses' trial counts at each pooled, sorted distinct cost (+inf last)."""
    levels = np.unique(np.concatenate([a, b]))
    count_a = np.bincount(np.searchsorted(levels, a), minlength=len(levels))
    count_b = np.bincount(np.searchsorted(levels, b), minlength=len(levels))
    return count_a, count_b


def _resampled_counts(level_of: np.ndarray, levels: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, levels): the trials at each level in each of `resamples` draws of len(level_of) trials with
    replacement (trial i is at level level_of[i]). One bincount over all resamples: numpy's multinomial, the same
    distribution, draws row by row and took most of the bootstrap's time."""
    picked = level_of[rng.integers(0, len(level_of), size=(resamples, len(level_of)))]
    offsets = np.arange(resamples)[:, None] * levels
    return np.bincount((picked + offsets).ravel(), minlength=resamples * levels).reshape(resamples, levels)


def win_probability(a: np.ndarray, b: np.ndarray, ks: int | np.ndarray,
                    higher_is_better: bool = False) -> np.ndarray:
    """P(the best of k trials drawn from `a` beats the best of k drawn from `b`), ties ½, for each k in `ks`, from
    the per-trial scores `a` and `b` (non-finite: worse than any finite). NaN where either has no trial."""
    ks = budgets(ks)
    a, b = costs(a, higher_is_better), costs(b, higher_is_better)
    if not len(a) or not len(b):
        return np.full(len(ks), np.nan)
    count_a, count_b = _pooled_counts(a, b)
    return _from_survivals(_survivals(count_a), _survivals(count_b), ks)


def win_probability_interval(a: np.ndarray, b: np.ndarray, ks: int | np.ndarray, higher_is_better: bool = False,
                             resamples: int = RESAMPLES, level: float = 0.95,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, low, high) for each k in `ks`: `win_probability` and its percentile bootstrap interval at `level`, each
    loss's trials resampled on their own, `resamples` times, from numpy's generator seeded with `seed` (the same
    interval for the same inputs)."""
    ks = budgets(ks)
    p = win_probability(a, b, ks, higher_is_better)
    a, b = costs(a, higher_is_better), costs(b, higher_is_better)
    if not len(a) or not len(b):
        return p, p.copy(), p.copy()
    levels = np.unique(np.concatenate([a, b]))
    rng = np.random.default_rng(seed)
    draws_a = _resampled_counts(np.searchsorted(levels, a), len(levels), resamples, rng)
    draws_b = _resampled_counts(np.searchsorted(levels, b), len(levels), resamples, rng)
    # In float32: half the memory traffic, twice as fast, and ~1e-7 from float64, far below the interval's resolution.
    resampled = _from_survivals(_survivals(draws_a).astype(np.float32), _survivals(draws_b).astype(np.float32), ks)
    tail = (1.0 - level) / 2
    low, high = np.quantile(resampled.astype(float), [tail, 1.0 - tail], axis=0)
    return p, low.round(6), high.round(6)  # float32's digits beyond these are noise
