"""Confidence intervals and significance tests for evaluation results (pure Python + numpy, no scipy).

Success is a proportion: its interval is the **Wilson score interval** (right even at 0/n and n/n, where the
normal "Wald" interval collapses to a point). Mean return gets a **percentile bootstrap** interval with a
fixed seed, so the same results always give the same numbers.

Comparing two runs: when both ran the same (task, seed) episodes the outcomes are *paired* and the tests
use only the pairs that disagree (McNemar's exact test for success, a sign-flip permutation test for
return); otherwise the samples are independent (Fisher's exact test for success, a permutation test on the
difference of means for return). Every p-value is two-sided.

>>> [round(x, 4) for x in wilson_ci(8, 10)]
[0.4902, 0.9433]
>>> round(fisher_exact(9, 10, 3, 10), 4)
0.0198
>>> mcnemar_exact(b=6, c=0)  # 6 pairs only A solved, none only B solved
0.03125
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_ci(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% (by default) Wilson score interval for `successes` out of `n`; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clamp rounding noise so 0/n gives exactly 0 and n/n exactly 1
    return (max(0.0, centre - half) if successes else 0.0, min(1.0, centre + half) if successes < n else 1.0)


def bootstrap_mean_ci(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (deterministic: seeded). A single value is its own interval.

    >>> bootstrap_mean_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return (float(lo), float(hi))


def fisher_exact(a_success: int, a_n: int, b_success: int, b_n: int) -> float:
    """Two-sided Fisher exact test p-value for two independent proportions (sum of tables no more likely)."""
    total_s, n = a_success + b_success, a_n + b_n
    lo, hi = max(0, total_s - b_n), min(total_s, a_n)

    def pmf(k: int) -> float:  # hypergeometric: k of the successes fall in sample A
        return math.comb(a_n, k) * math.comb(b_n, total_s - k) / math.comb(n, total_s)

    observed = pmf(a_success)
    p = sum(q for k in range(lo, hi + 1) if (q := pmf(k)) <= observed * (1 + 1e-9))
    return min(1.0, p)


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n trials against p = 1/2."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test: `b` pairs where only A succeeded, `c` where only B did (ties carry no signal)."""
    return binomial_two_sided(min(b, c), b + c)


def two_proportion_z(a_success: int, a_n: int, b_success: int, b_n: int) -> float:
    """Two-sided pooled z-test p-value (large-sample approximation; prefer `fisher_exact` for small n)."""
    if a_n == 0 or b_n == 0:
        return 1.0
    pooled = (a_success + b_success) / (a_n + b_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n))
    if se == 0:
        return 1.0
    z = abs(a_success / a_n - b_success / b_n) / se
    return math.erfc(z / math.sqrt(2))


def permutation_test(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided permutation test of mean(a) == mean(b) for independent samples (seeded Monte Carlo)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return 1.0
    pooled = np.concatenate([x, y])
    observed = abs(x.mean() - y.mean())
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(pooled, (resamples, 1)), axis=1)
    diffs = np.abs(perms[:, : x.size].mean(axis=1) - perms[:, x.size :].mean(axis=1))
    # +1 in numerator and denominator: the observed labelling is one of the permutations (never p = 0)
    return float((np.sum(diffs >= observed - 1e-12) + 1) / (resamples + 1))


def paired_permutation_test(diffs: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip test that paired differences have mean 0 (exact when 2^n <= resamples)."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    if 2**d.size <= resamples:  # every sign pattern once
        signs = ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(resamples, d.size))
    return float((np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12) + 1) / (resamples + 1))


# ---------------------------------------------------------------- comparing two runs
def _compare_group(a: list, b: list) -> dict:
    """Success and return differences (B - A) for two lists of episodes (anything with task_id, seed,
    success, return_), paired on (task, seed) when both hold exactly the same episodes."""
    ka, kb = {(r.task_id, r.seed): r for r in a}, {(r.task_id, r.seed): r for r in b}
    paired = bool(ka) and ka.keys() == kb.keys() and len(ka) == len(a) and len(kb) == len(b)
    sa, sb = sum(r.success for r in a), sum(r.success for r in b)
    rate = lambda k, n: k / n if n else 0.0  # noqa: E731
    mean = lambda rs: float(np.mean([r.return_ for r in rs])) if rs else 0.0  # noqa: E731
    if paired:
        only_a = sum(ka[k].success and not kb[k].success for k in ka)
        only_b = sum(kb[k].success and not ka[k].success for k in ka)
        success = {"test": "mcnemar-exact", "p_value": mcnemar_exact(only_a, only_b), "only_a": only_a, "only_b": only_b}
        ret = {"test": "paired-sign-flip", "p_value": paired_permutation_test([kb[k].return_ - ka[k].return_ for k in ka])}
    else:
        success = {"test": "fisher-exact", "p_value": fisher_exact(sa, len(a), sb, len(b))}
        ret = {"test": "permutation", "p_value": permutation_test([r.return_ for r in a], [r.return_ for r in b])}
    success.update(a=rate(sa, len(a)), b=rate(sb, len(b)), diff=rate(sb, len(b)) - rate(sa, len(a)),
                   ci_a=list(wilson_ci(sa, len(a))), ci_b=list(wilson_ci(sb, len(b))))
    ret.update(a=mean(a), b=mean(b), diff=mean(b) - mean(a))
    return {"n_a": len(a), "n_b": len(b), "paired": paired, "success": success, "return": ret}


def compare_results(a: Sequence, b: Sequence) -> dict:
    """Per task (every task in either run) and overall comparison of two runs' episodes: B - A.

    Success: McNemar's exact test when paired, else Fisher's exact test. Return: a sign-flip permutation
    test on the paired differences, else a permutation test on the difference of means. p-values are per
    comparison, not corrected for testing many tasks.
    """
    tasks = list(dict.fromkeys([r.task_id for r in a] + [r.task_id for r in b]))
    per_task = {t: _compare_group([r for r in a if r.task_id == t], [r for r in b if r.task_id == t]) for t in tasks}
    return {"per_task": per_task, "overall": _compare_group(list(a), list(b))}
