"""Average precision and ROC AUC in NumPy (sklearn's definitions, ties included).

AP  = sum over score thresholds (distinct values, high to low) of
      (recall gained at the threshold) * (precision at the threshold)
    = mean over positives i of precision(s >= s_i): sklearn's average_precision_score.
AUC = P(score of a random positive > score of a random negative) + 0.5 P(equal): the
      Mann-Whitney U statistic with average ranks, sklearn's roc_auc_score.
"""
import numpy as np

__all__ = ["average_precision", "roc_auc"]


def _check(labels, scores):
    y = np.asarray(labels).astype(np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"metrics: labels and scores differ in length ({y.size} vs {s.size})")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("metrics: labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("metrics: scores hold NaN or infinite values")
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("metrics: need at least one positive and one negative")
    return y, s


def average_precision(labels, scores):
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]   # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float(np.sum(recall_gain * precision))


def roc_auc(labels, scores):
    y, s = _check(labels, scores)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    ranks = np.empty(s.size)
    # Average rank (1-based) over each run of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted) != 0) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
