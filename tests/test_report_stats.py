"""report/stats.py against scipy and hand-worked cases. Each check is a function that takes the
implementation under test; the planted bugs below (Student's df, a one-sided p, a Holm without
the step-down maximum, a permutation p that ignores ties) must each fail it."""
import math
import statistics
import types

import numpy as np
import pytest
from scipy import stats as st

from objcrop.errors import ObjcropError
from objcrop.report import stats

# unequal sizes and variances: Welch's df (about 4.6) is far from Student's (9)
A = [45.1, 48.2, 42.8, 44.8, 46.9, 41.0]
B = [39.1, 41.9, 40.2, 40.9, 40.5]


# ---------------------------------------------------------------- the checks

def check_welch(welch):
    ref = st.ttest_ind(A, B, equal_var=False)
    w = welch(A, B)
    assert w.t == pytest.approx(ref.statistic, rel=1e-12)
    assert w.df == pytest.approx(ref.df, rel=1e-12)
    assert w.p == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (w.ci_low, w.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    # symmetric: swapping the groups flips the sign and keeps p
    s = welch(B, A)
    assert s.diff == pytest.approx(-w.diff) and s.p == pytest.approx(w.p)


def check_welch_hand(welch):
    # a = [1, 2, 3], b = [4, 6, 8]: va = 1, vb = 4; se² = 1/3 + 4/3 = 5/3; df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17
    w = welch([1, 2, 3], [4, 6, 8])
    assert w.diff == -4 and w.se == pytest.approx(math.sqrt(5 / 3))
    assert w.df == pytest.approx(50 / 17)
    assert w.p == pytest.approx(2 * st.t.cdf(-4 / math.sqrt(5 / 3), 50 / 17))


def check_holm(holm):
    # hand-worked: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02, None, 0.04]) == [pytest.approx(0.04), None, pytest.approx(0.04)]


def check_permutation(permutation_p):
    # hand-worked: [1, 2] vs [3, 4]: 6 relabellings, |Δ| = 2, 1, 0, 0, 1, 2 → 2 of 6 reach the observed 2
    r = permutation_p([1, 2], [3, 4])
    assert r.exact and r.relabellings == 6 and r.p == pytest.approx(1 / 3)
    # exact against scipy's exhaustive test (equal sizes: the null is symmetric, both two-sided p agree)
    a, b = [45.1, 48.2, 42.8, 44.8], [39.1, 41.9, 40.2, 40.9]
    ref = st.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                              n_resamples=np.inf, alternative="two-sided")
    mine = permutation_p(a, b)
    assert mine.exact and mine.relabellings == 70 and mine.p == pytest.approx(ref.pvalue)
    # ties: the labelling with the same |Δ| counts ([0, 0] vs [1, 1]: |Δ| 1 twice among 6)
    assert permutation_p([0, 0], [1, 1]).p == pytest.approx(1 / 3)


# ---------------------------------------------------------------- the real functions pass

def test_welch_matches_scipy():
    check_welch(stats.welch)
    check_welch_hand(stats.welch)


def test_holm_hand_worked():
    check_holm(stats.holm)


def test_permutation_exact():
    check_permutation(stats.permutation_p)


def test_permutation_monte_carlo_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(1.0, 1, 9)), list(rng.normal(0, 1, 9))  # C(18, 9) = 48620 relabellings
    exact = stats.permutation_p(a, b)
    mc = stats.permutation_p(a, b, max_exact=1000, draws=20000, seed=3)
    assert exact.exact and not mc.exact and mc.relabellings == 20000
    assert mc.p == stats.permutation_p(a, b, max_exact=1000, draws=20000, seed=3).p  # same seed, same p
    assert mc.p == pytest.approx(exact.p, abs=4 * math.sqrt(exact.p * (1 - exact.p) / 20000) + 1e-4)
    assert mc.p >= 1 / 20001  # never 0: the observed labelling counts


def test_effect_sizes():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]  # pooled var (1 + 4) / 2 = 2.5
    assert stats.cohens_d(a, b) == pytest.approx(-2 / math.sqrt(2.5))
    # J(4) = Γ(2) / (√2 Γ(1.5)) = 1 / (√2 · √π / 2) ≈ 0.7979; the approximation 1 - 3/(4·6-9) = 0.8
    assert stats.hedges_g(a, b) == pytest.approx(-2 / math.sqrt(2.5) * 2 / math.sqrt(2 * math.pi))
    assert stats.hedges_g(a, b) / stats.cohens_d(a, b) == pytest.approx(0.8, abs=0.003)
    assert stats.cohens_d([1, 1], [1, 1]) is None


def test_compare_and_bad_input():
    c = stats.compare(A, B)
    assert c["diff"] == pytest.approx(statistics.mean(A) - statistics.mean(B))
    assert c["ci"][0] < c["diff"] < c["ci"][1] and c["perm_exact"] and c["relabellings"] == math.comb(11, 6)
    assert stats.welch([1, 1], [2, 2]) is None  # no spread: no t
    with pytest.raises(ObjcropError):
        stats.welch([1.0], [2.0, 3.0])
    with pytest.raises(ObjcropError):
        stats.holm([0.2, 1.5])


# ---------------------------------------------------------------- the planted bugs fail the checks

def _welch_student_df(a, b):
    w = stats.welch(a, b)
    df = len(a) + len(b) - 2
    p = float(2 * st.t.sf(abs(w.t), df))
    half = float(st.t.ppf(0.975, df)) * w.se
    return stats.Welch(w.diff, w.se, df, w.t, p, w.diff - half, w.diff + half)


def _welch_one_sided(a, b):
    w = stats.welch(a, b)
    return stats.Welch(w.diff, w.se, w.df, w.t, float(st.t.sf(w.t, w.df)), w.ci_low, w.ci_high)


def _holm_not_monotone(pvalues):
    m, order = len(pvalues), sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [None] * m
    for rank, i in enumerate(order):
        out[i] = min(1.0, (m - rank) * pvalues[i])
    return out


def _permutation_strict(a, b):
    """Counts only relabellings strictly beyond the observed |Δ| (drops the observed one and ties)."""
    r = stats.permutation_p(a, b)
    return types.SimpleNamespace(p=r.p - 1 / r.relabellings, exact=r.exact, relabellings=r.relabellings)


@pytest.mark.parametrize("check, bug", [(check_welch, _welch_student_df), (check_welch_hand, _welch_student_df),
                                        (check_welch, _welch_one_sided), (check_welch_hand, _welch_one_sided),
                                        (check_holm, _holm_not_monotone),
                                        (check_permutation, _permutation_strict)])
def test_planted_bugs_fail(check, bug):
    with pytest.raises(AssertionError):
        check(bug)
