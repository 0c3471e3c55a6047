"""Who beats whom: bench.win_probability against independent computations on known inputs.

Each number is checked against something computed another way: constructed cases with known answers, Agarwal et al.'s
probability of improvement (rliable) and the Mann–Whitney U (scipy) at k = 1, brute-force enumeration of every k-tuple
of trials, closed forms for two- and three-point distributions, and, for the bootstrap interval, an independent
bootstrap over trial indices and a coverage simulation against the exact value for continuous distributions
(numerical integration of the best-of-k densities)."""

import itertools

import numpy as np
import pytest
import scipy.stats
from rliable.metrics import probability_of_improvement
from scipy import integrate

from bench.win_probability import (reliable_budget, win_probability,
                                   win_probability_interval)

KS = np.arange(1, 41)


# ---------------------------------------------------------------- independent computations


def diverged_as_inf(scores, higher_is_better=False):
    """Costs, lower better, written out here: negated when higher is better, anything not finite → +inf."""
    costs = [-s if higher_is_better else s for s in map(float, scores)]
    return [c if np.isfinite(c) else np.inf for c in costs]


def brute_force(a, b, k, higher_is_better=False):
    """Every k-tuple of A's trials against every k-tuple of B's (drawn with replacement, all equally likely)."""
    a, b = diverged_as_inf(a, higher_is_better), diverged_as_inf(b, higher_is_better)
    total = 0.0
    bests_b = [min(t) for t in itertools.product(b, repeat=k)]
    for tuple_a in itertools.product(a, repeat=k):
        best_a = min(tuple_a)
        total += sum(1.0 if best_a < best_b else 0.5 if best_a == best_b else 0.0 for best_b in bests_b)
    return total / (len(a) ** k * len(b) ** k)


def reference_win_probability(a, b, k):
    """Lower better, non-finite already +inf: over A's distinct values v, P(best_A = v) = P(all ≥ v) − P(all > v),
    times P(best_B > v) + ½ P(best_B = v), with shares counted by direct comparisons (no cumulative sums)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    total = 0.0
    for v in np.unique(a):
        at_a = np.mean(a >= v) ** k - np.mean(a > v) ** k
        above_b = np.mean(b > v) ** k
        at_b = np.mean(b >= v) ** k - above_b
        total += at_a * (above_b + 0.5 * at_b)
    return total


def true_win_probability(dist_a, dist_b, k, higher_is_better=False):
    """The exact P(A's best of k beats B's best of k) for continuous (frozen scipy) distributions:
    ∫ k f_A(x) (1 − F_A(x))^{k−1} (1 − F_B(x))^k dx when lower is better, F in place of 1 − F when higher is."""
    log_worse = (lambda d, x: d.logcdf(x)) if higher_is_better else (lambda d, x: d.logsf(x))

    def integrand(x):
        exponent = k * log_worse(dist_b, x)
        if k > 1:  # not 0 · (−inf) where A's tail is exhausted
            exponent += (k - 1) * log_worse(dist_a, x)
        return k * dist_a.pdf(x) * np.exp(exponent)

    median = 0.5 ** (1 / k) if higher_is_better else 1 - 0.5 ** (1 / k)  # of the best of k's quantile
    lo, hi = dist_a.ppf(1e-14), dist_a.isf(1e-14)  # the integrand is at most k f_A
    points = sorted(c for c in (dist_a.ppf(median), dist_b.ppf(median)) if lo < c < hi)
    value, _ = integrate.quad(integrand, lo, hi, points=points, limit=500, epsabs=1e-13, epsrel=1e-10)
    return value


def scores_with_ties_and_divergence(rng, n, decimals=1, diverged=0.15):
    scores = np.round(rng.normal(size=n), decimals)
    scores[rng.random(n) < diverged / 2] = np.nan
    scores[rng.random(n) < diverged / 2] = np.inf
    return scores


# Pairs of continuous per-trial score distributions (A, B, higher_is_better) for the coverage simulation.
NORMAL = (scipy.stats.norm(0, 1), scipy.stats.norm(0.5, 1), False)
# Skewed, and the order flips with k: A is better in the middle (p ≈ 0.61 at k = 1), B's wide lower tail wins at k ≥ 2.
LOGNORMAL = (scipy.stats.lognorm(0.25), scipy.stats.lognorm(1.0, scale=np.exp(0.3)), False)
# Heavy right tail, higher better (the best of k is in the heavy tail): B is better at k = 1, A from k ≈ 4 on.
LOGNORMAL_HIGHER = (scipy.stats.lognorm(1.0), scipy.stats.lognorm(0.5, scale=np.exp(0.5)), True)
PAIRS = {"normal": NORMAL, "lognormal": LOGNORMAL, "lognormal-higher-better": LOGNORMAL_HIGHER}


# ---------------------------------------------------------------- constructed cases


def test_identical_losses_are_even_for_every_budget():
    scores = np.array([3.0, 1.0, 1.0, np.nan, 2.5, np.inf, 7.0])
    np.testing.assert_allclose(win_probability(scores, scores, KS), 0.5, atol=1e-12)
    # the same empirical distribution, each trial twice and in another order: still even
    np.testing.assert_allclose(win_probability(scores, np.tile(scores[::-1], 2), KS), 0.5, atol=1e-12)


def test_a_loss_whose_every_trial_is_better_always_wins():
    a = np.array([0.1, 0.5, 0.9, 0.9])
    b = np.array([1.0, 3.0, np.nan, np.inf, 1.0])
    np.testing.assert_allclose(win_probability(a, b, KS), 1.0, atol=1e-12)
    np.testing.assert_allclose(win_probability(b, a, KS), 0.0, atol=1e-12)


def test_a_beats_b_and_b_beats_a_sum_to_one():
    rng = np.random.default_rng(1)
    ks = np.concatenate([KS, [100, 1000]])
    for n_a, n_b in [(5, 9), (20, 20), (31, 7)]:
        a, b = scores_with_ties_and_divergence(rng, n_a, 0), scores_with_ties_and_divergence(rng, n_b, 0)
        assert len(set(a[np.isfinite(a)]) & set(b[np.isfinite(b)])), "the inputs should tie somewhere"
        np.testing.assert_allclose(win_probability(a, b, ks) + win_probability(b, a, ks), 1.0, atol=1e-12)


def test_several_budgets_at_once_equal_one_budget_at_a_time():
    rng = np.random.default_rng(2)
    a, b = scores_with_ties_and_divergence(rng, 17), scores_with_ties_and_divergence(rng, 11)
    ks = np.array([1, 2, 5, 6, 13, 40])
    together = win_probability(a, b, ks)
    np.testing.assert_allclose(together, [win_probability(a, b, int(k))[0] for k in ks], rtol=0, atol=1e-13)
    _, low, high = win_probability_interval(a, b, ks, resamples=300, seed=5)
    for i, k in enumerate(ks):
        _, low_k, high_k = win_probability_interval(a, b, int(k), resamples=300, seed=5)
        np.testing.assert_allclose([low[i], high[i]], [low_k[0], high_k[0]], atol=1e-13)


# ---------------------------------------------------------------- k = 1: Agarwal et al.'s probability of improvement


@pytest.mark.parametrize("n_a,n_b,seed", [(5, 7, 0), (20, 20, 1), (33, 12, 2), (8, 50, 3)])
def test_budget_one_is_rliable_probability_of_improvement(n_a, n_b, seed):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(0.3, 1, n_a), 1)  # rounded: ties within and across losses
    b = np.round(rng.normal(0.0, 1, n_b), 1)
    expected = probability_of_improvement(a[:, None], b[:, None])  # higher is better
    assert win_probability(a, b, 1, higher_is_better=True)[0] == pytest.approx(expected, abs=1e-12)
    assert win_probability(b, a, 1, higher_is_better=True)[0] == pytest.approx(1 - expected, abs=1e-12)
    # diverged trials: NaN here, −inf (worse than any score, higher better) for rliable
    a[:2], b[-1] = np.nan, np.nan
    expected = probability_of_improvement(np.where(np.isnan(a), -np.inf, a)[:, None],
                                          np.where(np.isnan(b), -np.inf, b)[:, None])
    assert win_probability(a, b, 1, higher_is_better=True)[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n_a,n_b,seed", [(5, 7, 4), (20, 20, 5), (33, 12, 6)])
def test_budget_one_lower_is_better_is_the_mann_whitney_u(n_a, n_b, seed):
    rng = np.random.default_rng(seed)
    a = scores_with_ties_and_divergence(rng, n_a)
    b = scores_with_ties_and_divergence(rng, n_b)
    a_inf, b_inf = np.where(np.isfinite(a), a, np.inf), np.where(np.isfinite(b), b, np.inf)
    # A beats B where b > a (lower better): U of b over a, ties ½
    u = scipy.stats.mannwhitneyu(b_inf, a_inf, alternative="greater").statistic
    assert win_probability(a, b, 1)[0] == pytest.approx(u / (n_a * n_b), abs=1e-12)
    # and the same through rliable on the negated scores
    assert win_probability(a, b, 1)[0] == pytest.approx(
        probability_of_improvement(-a_inf[:, None], -b_inf[:, None]), abs=1e-12)


# ---------------------------------------------------------------- brute force over every k-tuple

SMALL_A = np.array([3.0, 1.0, np.nan, 2.0])
SMALL_B = np.array([2.0, np.inf, 0.5])  # 2.0 ties A's; inf ties A's NaN (both diverged)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exact_probability_equals_enumerating_every_k_tuple(k):
    for a, b in [(SMALL_A, SMALL_B), (SMALL_B, SMALL_A), (SMALL_A, SMALL_A[::-1])]:
        expected = brute_force(a, b, k)
        assert win_probability(a, b, k)[0] == pytest.approx(expected, abs=1e-12)
        assert reference_win_probability(diverged_as_inf(a), diverged_as_inf(b), k) == pytest.approx(expected,
                                                                                                    abs=1e-12)
        expected = brute_force(a, b, k, higher_is_better=True)
        assert win_probability(a, b, k, higher_is_better=True)[0] == pytest.approx(expected, abs=1e-12)


def test_exact_probability_equals_an_independent_formula_on_larger_inputs():
    rng = np.random.default_rng(7)
    for n_a, n_b in [(12, 30), (40, 40), (7, 3)]:
        a, b = scores_with_ties_and_divergence(rng, n_a), scores_with_ties_and_divergence(rng, n_b)
        expected = [reference_win_probability(diverged_as_inf(a), diverged_as_inf(b), k) for k in KS]
        np.testing.assert_allclose(win_probability(a, b, KS), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- divergence and direction


def test_diverged_trials_are_worse_than_any_finite_score():
    diverged = np.array([np.nan, np.nan, np.nan])
    finite = np.array([1e6, 3.0, -2.0])
    for higher in (False, True):
        np.testing.assert_allclose(win_probability(diverged, finite, KS, higher), 0.0, atol=1e-12)
        np.testing.assert_allclose(win_probability(finite, diverged, KS, higher), 1.0, atol=1e-12)
    # every kind of "no finite score" ties with every other: NaN, +inf, and −inf (a cost of −inf is no score either)
    np.testing.assert_allclose(win_probability(diverged, np.array([np.inf, -np.inf, np.nan, np.nan]), KS), 0.5,
                               atol=1e-12)
    np.testing.assert_allclose(win_probability(diverged, diverged[:1], KS, higher_is_better=True), 0.5, atol=1e-12)


def test_a_loss_without_trials_gives_nan():
    assert np.isnan(win_probability(np.array([]), np.array([1.0]), [1, 2])).all()
    p, low, high = win_probability_interval(np.array([1.0]), np.array([]), [1, 2])
    assert np.isnan(p).all() and np.isnan(low).all() and np.isnan(high).all()


def test_higher_is_better_on_negated_scores_equals_lower_is_better():
    rng = np.random.default_rng(8)
    for n_a, n_b in [(6, 9), (25, 25)]:
        a, b = scores_with_ties_and_divergence(rng, n_a), scores_with_ties_and_divergence(rng, n_b)
        np.testing.assert_allclose(win_probability(-a, -b, KS, higher_is_better=True), win_probability(a, b, KS),
                                   rtol=0, atol=1e-13)
        lower = win_probability_interval(a, b, [1, 4], resamples=200, seed=3)
        higher = win_probability_interval(-a, -b, [1, 4], higher_is_better=True, resamples=200, seed=3)
        np.testing.assert_allclose(higher, lower, rtol=0, atol=1e-13)


# ---------------------------------------------------------------- the budget moves the winner toward the better tail


def test_growing_budget_favours_the_loss_with_the_better_tail():
    # A: always 10. B: mostly 20, a share q at 1. A's best is 10; it wins exactly when B's best is 20, i.e. when none
    # of B's k draws hit 1: P(A beats B) = P(best_B = 20) = (1 − q)^k, and P(best_B = 1) = 1 − (1 − q)^k.
    a = np.full(30, 10.0)
    b = np.array([20.0] * 8 + [1.0] * 2)
    q = 0.2
    ks = np.arange(1, 201)
    p = win_probability(a, b, ks)
    np.testing.assert_allclose(p, (1 - q) ** ks, rtol=1e-12, atol=1e-300)
    assert p[0] == pytest.approx(0.8) and p[0] > 0.5
    assert np.all(np.diff(p) < 0), "should fall with every extra trial in the budget"
    assert p[3] < 0.5 < p[2]  # B is the better bet from k = 4 on: 0.8³ = 0.512, 0.8⁴ = 0.41
    assert p[-1] < 1e-19  # → 0: with enough trials B's best is 1

    # with a tie: B at 20 (share 0.6), at 10 like A (0.2), at 1 (0.2): A wins when B's best is 20, ties when it is 10:
    # P = 0.6^k + ½ (0.8^k − 0.6^k)
    b = np.array([20.0] * 6 + [10.0] * 2 + [1.0] * 2)
    np.testing.assert_allclose(win_probability(a, b, ks), 0.6 ** ks + 0.5 * (0.8 ** ks - 0.6 ** ks), rtol=1e-12)


# ---------------------------------------------------------------- the bootstrap interval


def test_true_value_of_the_coverage_simulation_is_right():
    """The integral the coverage simulation trusts, at k = 1 against the closed form (a normal difference), and at
    larger k against Monte Carlo."""
    for dist_a, dist_b, _ in (NORMAL, LOGNORMAL):
        # lower better: log A − log B is normal for both pairs, P(A < B) = Φ((μ_B − μ_A) / √(σ_A² + σ_B²))
        (mu_a, s_a), (mu_b, s_b) = [
            (d.mean(), d.std()) if d.dist.name == "norm" else (np.log(d.kwds.get("scale", 1.0)), d.args[0])
            for d in (dist_a, dist_b)]
        closed = scipy.stats.norm.cdf((mu_b - mu_a) / np.hypot(s_a, s_b))
        assert true_win_probability(dist_a, dist_b, 1) == pytest.approx(closed, abs=1e-9)
    rng = np.random.default_rng(9)
    draws = 100_000
    for name, (dist_a, dist_b, higher) in PAIRS.items():
        for k in (3, 12):
            a = dist_a.rvs(size=(draws, k), random_state=rng)
            b = dist_b.rvs(size=(draws, k), random_state=rng)
            wins = a.max(1) > b.max(1) if higher else a.min(1) < b.min(1)
            assert true_win_probability(dist_a, dist_b, k, higher) == pytest.approx(wins.mean(), abs=0.006), (name, k)


def test_interval_matches_an_independent_bootstrap_over_trials():
    """The counted bootstrap against resampling trial indices (with replacement) and the independent
    formula: the same percentile interval up to the resampling noise of the quantiles."""
    rng = np.random.default_rng(10)
    a, b = scores_with_ties_and_divergence(rng, 30), scores_with_ties_and_divergence(rng, 24)
    ks = [1, 3]
    p, low, high = win_probability_interval(a, b, ks, resamples=4000, seed=11)
    a_inf, b_inf = np.asarray(diverged_as_inf(a)), np.asarray(diverged_as_inf(b))
    boot = np.array([[reference_win_probability(a_inf[rng.integers(0, len(a), len(a))],
                                                b_inf[rng.integers(0, len(b), len(b))], k) for k in ks]
                     for _ in range(4000)])
    np.testing.assert_allclose(low, np.quantile(boot, 0.025, axis=0), atol=0.025)
    np.testing.assert_allclose(high, np.quantile(boot, 0.975, axis=0), atol=0.025)
    assert np.all(high - low > 0.2)  # not a degenerate interval, so the comparison means something


def coverage(pair, n, ks, replications, seed):
    """Share of `replications` simulated studies (n trials per loss) whose 95 % interval holds the true value."""
    dist_a, dist_b, higher = pair
    truth = np.array([true_win_probability(dist_a, dist_b, int(k), higher) for k in ks])
    rng = np.random.default_rng(seed)
    covered = np.zeros(len(ks))
    for replication in range(replications):
        a, b = dist_a.rvs(size=n, random_state=rng), dist_b.rvs(size=n, random_state=rng)
        _, low, high = win_probability_interval(a, b, ks, higher_is_better=higher, seed=replication)
        covered += (low <= truth) & (truth <= high)
    return covered / replications


@pytest.mark.parametrize("name,n,replications", [("normal", 40, 400), ("lognormal", 40, 400),
                                                  ("lognormal-higher-better", 40, 400), ("normal", 200, 300)])
def test_interval_covers_the_true_value_at_its_stated_rate(name, n, replications):
    """The 95 % interval holds the exact value in 95 % ± 5 % of simulated studies, at k = 1 and at the largest budget
    `reliable_budget` vouches for. n = 200 too: at a fixed k / n the coverage falls as n grows (the bootstrap of a
    best of k degrades with k itself), so a budget rule that holds at 40 trials need not at 200."""
    ks = np.unique([1, reliable_budget(n, n)])
    rates = coverage(PAIRS[name], n, ks, replications, seed=12)
    print(f"coverage of the 95 % interval, {name}, n = {n}: " + ", ".join(f"k = {k}: {r:.3f}" for k, r in
                                                                           zip(ks, rates)))
    assert np.all((0.90 <= rates) & (rates <= 1.0)), dict(zip(ks.tolist(), rates.tolist()))


def test_same_seed_same_interval_and_the_interval_holds_p():
    rng = np.random.default_rng(13)
    ks = [1, 2, 5]
    for _ in range(5):
        a = scores_with_ties_and_divergence(rng, 25, decimals=2)
        b = scores_with_ties_and_divergence(rng, 25, decimals=2) + 0.3
        first = win_probability_interval(a, b, ks, seed=4)
        np.testing.assert_array_equal(first, win_probability_interval(a, b, ks, seed=4))
        assert not np.array_equal(first[1:], win_probability_interval(a, b, ks, seed=5)[1:])
        p, low, high = first
        np.testing.assert_array_equal(p, win_probability(a, b, ks))
        assert np.all((0 <= low) & (low <= p) & (p <= high) & (high <= 1)), (p, low, high)


@pytest.mark.parametrize("ks", [0, [0, 1], [2, 1], [1, 1], 1.5, [1, 2.5], [], [[1, 2]], -3])
def test_bad_budgets_are_refused(ks):
    a, b = np.array([1.0, 2.0]), np.array([1.5])
    with pytest.raises(ValueError):
        win_probability(a, b, ks)
    with pytest.raises(ValueError):
        win_probability_interval(a, b, ks)


def test_reliable_budget_is_the_square_root_of_the_smaller_count_and_at_least_one():
    assert [reliable_budget(n_a, n_b) for n_a, n_b in [(40, 40), (100, 41), (41, 100), (3, 9), (200, 400), (0, 9)]] \
        == [6, 6, 6, 1, 14, 1]
