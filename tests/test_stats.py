"""respaths.stats against scipy and direct resampling: Wilson intervals, exact McNemar, paired bootstrap,
the Student-t interval."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from respaths import stats


def test_wilson_interval():
    lo, hi = stats.wilson_ci(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-4) and hi == pytest.approx(0.1744, abs=1e-4)


def test_mcnemar_exact():
    base = np.ones(100, dtype=bool)
    plan = base.copy()
    plan[:9] = False  # 9 images newly wrong, 1 newly right
    plan[50] = True
    base[50] = False
    assert stats.discordant(base, plan) == (9, 1)
    assert stats.mcnemar_p(base, plan) == pytest.approx(scipy_stats.binomtest(1, 10, 0.5).pvalue)
    assert stats.mcnemar_p(base, base) == 1.0


def test_paired_bootstrap_matches_resampling_images():
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.8
    plan = base.copy()
    flip = rng.random(400) < 0.15
    plan[flip] = ~plan[flip]
    lo, hi = stats.paired_bootstrap_ci(base, plan, resamples=20000)
    diff = (~plan).astype(float) - (~base).astype(float)
    ref = scipy_stats.bootstrap((diff,), np.mean, n_resamples=20000, method="percentile",
                                random_state=np.random.default_rng(1)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.006) and hi == pytest.approx(ref.high, abs=0.006)
    assert lo < diff.mean() < hi
    assert stats.paired_bootstrap_ci(base, plan) == stats.paired_bootstrap_ci(base, plan)  # seeded
    assert stats.paired_bootstrap_ci(base, base) == (0.0, 0.0)


def test_mean_ci_is_the_student_t_interval():
    values = [0.1, 0.4, 0.35, 0.2, 0.3]
    lo, hi = stats.mean_ci(values)
    m, s = np.mean(values), np.std(values, ddof=1)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * s / np.sqrt(len(values))
    assert lo == pytest.approx(m - half) and hi == pytest.approx(m + half)
