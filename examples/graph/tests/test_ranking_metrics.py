"""AP and AUC against their brute-force definitions, ties included."""
import itertools

import numpy as np
import pytest

from ranking_metrics import average_precision, roc_auc


def brute_ap(y, s):
    """Mean over positives i of the precision among all items scored >= s_i."""
    return np.mean([y[s >= si].mean() for si in s[y == 1]])


def brute_auc(y, s):
    """P(positive > negative) + 0.5 P(tie), over every positive-negative pair."""
    pairs = list(itertools.product(s[y == 1], s[y == 0]))
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])


@pytest.mark.parametrize("seed", range(20))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = rng.integers(0, 5, n).astype(float) if seed % 2 else rng.standard_normal(n)  # odd seeds: many ties
    assert average_precision(y, s) == pytest.approx(brute_ap(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)


def test_known_values():
    y = np.array([1, 0, 1, 0])
    assert average_precision(y, [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(y, [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.75)
    assert roc_auc(y, [1, 1, 1, 1]) == 0.5
    assert average_precision(y, [1, 1, 1, 1]) == 0.5  # all tied: the base rate
    assert average_precision([1, 1, 0, 0], [4, 3, 2, 1]) == 1.0


@pytest.mark.parametrize("y, s, match", [
    ([1, 0], [0.5], "length"),
    ([1, 2], [0.5, 0.1], "0 or 1"),
    ([1, 1], [0.5, 0.1], "one positive and one negative"),
    ([1, 0], [np.nan, 0.1], "NaN"),
])
def test_bad_input(y, s, match):
    with pytest.raises(ValueError, match=match):
        average_precision(y, s)
    with pytest.raises(ValueError, match=match):
        roc_auc(y, s)
