"""The statistics of the study page's comparisons (docs/preregistration.md): pure functions of
per-seed scores, no files.

* `welch` — Welch's t-test (two-sided p, Welch–Satterthwaite degrees of freedom) and the
  difference of means with its confidence interval;
* `permutation_p` — the permutation test of the difference of means, two-sided: exact over
  every relabelling when there are few enough, else a Monte-Carlo estimate with a fixed seed;
* `cohens_d`, `hedges_g` — the standardised difference (pooled sample std) and its small-sample
  correction;
* `holm` — Holm's step-down adjustment of a family of p-values;
* `compare` — all of them for one pair of arms.

Differences are always first group minus second (the arm minus its baseline).
"""
import itertools
import math
import statistics
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from scipy import stats as _st

from objcrop.errors import ObjcropError

MAX_EXACT = 100_000  # relabellings enumerated exactly up to this many (C(n1 + n2, n1))
DRAWS = 100_000      # Monte-Carlo relabellings beyond it
SEED = 0


@dataclass(frozen=True)
class Welch:
    diff: float      # mean(a) - mean(b)
    se: float
    df: float        # Welch–Satterthwaite
    t: float
    p: float         # two-sided
    ci_low: float
    ci_high: float


def _check(a: Sequence[float], b: Sequence[float], least: int = 2) -> None:
    if len(a) < least or len(b) < least:
        raise ObjcropError(f"a comparison needs at least {least} values per group, got {len(a)} and {len(b)}")


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch–Satterthwaite: (va/na + vb/nb)^2 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1))."""
    qa, qb = var_a / n_a, var_b / n_b
    return (qa + qb) ** 2 / (qa ** 2 / (n_a - 1) + qb ** 2 / (n_b - 1))


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Welch]:
    """Welch's unequal-variance t-test of mean(a) = mean(b); None when both groups have no spread
    (no t exists: the difference is exact or the values are degenerate)."""
    _check(a, b)
    va, vb = statistics.variance(a), statistics.variance(b)
    if va == 0 and vb == 0:
        return None
    diff = statistics.mean(a) - statistics.mean(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    df = welch_df(va, len(a), vb, len(b))
    t = diff / se
    p = float(2 * _st.t.sf(abs(t), df))
    half = float(_st.t.ppf(0.5 + level / 2, df)) * se
    return Welch(diff, se, df, t, min(p, 1.0), diff - half, diff + half)


@dataclass(frozen=True)
class Permutation:
    p: float
    exact: bool
    relabellings: int  # every one (exact) or the number drawn (Monte-Carlo)


def permutation_p(a: Sequence[float], b: Sequence[float], max_exact: int = MAX_EXACT, draws: int = DRAWS,
                  seed: int = SEED) -> Permutation:
    """Two-sided permutation p of the difference of means: the share of relabellings of the pooled
    values into groups of len(a) and len(b) whose |difference| is at least the observed one. Exact
    (the observed labelling included) when C(n, len(a)) <= max_exact; else (1 + hits) / (1 + draws)
    over `draws` random relabellings from numpy's default_rng(seed)."""
    _check(a, b, least=1)
    pooled = np.asarray(list(a) + list(b), dtype=float)
    n, k = len(pooled), len(a)
    total = pooled.sum()
    observed = abs(np.mean(a) - np.mean(b))
    tol = 1e-9 * max(1.0, float(np.abs(pooled).max()))  # equal differences must count as equal
    count = math.comb(n, k)
    if count <= max_exact:
        idx = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
        sums = pooled[idx].sum(axis=1)
        diffs = np.abs(sums / k - (total - sums) / (n - k))
        return Permutation(float(np.mean(diffs >= observed - tol)), True, count)
    rng = np.random.default_rng(seed)
    hits, left = 0, draws
    while left:  # in chunks: draws x n values at once would be large
        m = min(left, 20_000)
        perm = rng.permuted(np.tile(pooled, (m, 1)), axis=1)
        sums = perm[:, :k].sum(axis=1)
        hits += int(np.sum(np.abs(sums / k - (total - sums) / (n - k)) >= observed - tol))
        left -= m
    return Permutation((1 + hits) / (1 + draws), False, draws)



def cohens_d(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """(mean(a) - mean(b)) / the pooled sample std; None when the pooled std is 0."""
    _check(a, b)
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * statistics.variance(a) + (nb - 1) * statistics.variance(b)) / (na + nb - 2))
    return None if pooled == 0 else (statistics.mean(a) - statistics.mean(b)) / pooled


def hedges_g(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Cohen's d times the exact small-sample factor J(df) = Γ(df/2) / (√(df/2) Γ((df-1)/2)),
    df = n_a + n_b - 2 (Hedges 1981)."""
    d = cohens_d(a, b)
    if d is None:
        return None
    df = len(a) + len(b) - 2
    return d * math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)


def holm(pvalues: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest of m is
    multiplied by (m - i + 1), made non-decreasing along the sorted order, capped at 1. None
    entries (no test) are left out of the family and stay None."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    for p, _ in present:
        if not 0 <= p <= 1 or math.isnan(p):
            raise ObjcropError(f"holm: a p-value must lie in [0, 1], got {p}")
    m = len(present)
    out: List[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def compare(a: Sequence[float], b: Sequence[float]) -> dict:
    """Everything the page prints for one arm `a` against its baseline `b`."""
    w = welch(a, b)
    perm = permutation_p(a, b)
    return {"n": len(a), "n_base": len(b), "diff": statistics.mean(a) - statistics.mean(b),
            "ci": None if w is None else (w.ci_low, w.ci_high), "df": None if w is None else w.df,
            "p": None if w is None else w.p, "perm_p": perm.p, "perm_exact": perm.exact,
            "relabellings": perm.relabellings, "g": hedges_g(a, b)}
