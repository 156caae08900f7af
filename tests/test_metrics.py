"""Classification metrics against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from itsacat.metrics import classification_metrics


def test_metrics_of_a_small_case_worked_by_hand() -> None:
    # 6 cats, 2 non-cats; at 0.5: tp 3, fn 3, tn 1, fp 1
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.7, 0.1])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 6 + 1 / 2) / 2)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    # pairs (cat, non-cat) ranked right: against 0.7: 2 of 6; against 0.1: 6 of 6
    assert m["roc_auc"] == pytest.approx(8 / 12)


def test_balanced_accuracy_ignores_the_share_of_each_class() -> None:
    """Repeating every cat 5 times changes accuracy, not balanced accuracy."""
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.8])
    once = classification_metrics(y, p)
    many = classification_metrics(
        np.r_[np.repeat(y[:2], 5), y[2:]], np.r_[np.repeat(p[:2], 5), p[2:]]
    )
    assert many["balanced_accuracy"] == pytest.approx(once["balanced_accuracy"])
    assert many["accuracy"] != pytest.approx(once["accuracy"])


def test_balanced_accuracy_of_one_class_only_counts_what_is_defined() -> None:
    m = classification_metrics(np.array([1, 1]), np.array([0.9, 0.1]))
    assert m["balanced_accuracy"] == pytest.approx(0.5)  # the cats' recall: no non-cats to count
