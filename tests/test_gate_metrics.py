"""Gate metrics on score lists whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audiogate.config import parse_operating_point
from audiogate.errors import ConfigError
from audiogate.reporting.metrics import (
    best_f1_threshold,
    choose_threshold,
    equal_error_rate,
    error_rates,
    error_tradeoff,
    gate_report,
    macro_f1,
    threshold_at_far,
    threshold_at_frr,
)

# negatives 0.1..0.4 and 0.7; positives 0.6, 0.8, 0.9, 0.95 and 0.35
NEG = [0.1, 0.2, 0.3, 0.4, 0.7]
POS = [0.35, 0.6, 0.8, 0.9, 0.95]
Y = np.array([0] * len(NEG) + [1] * len(POS))
S = np.array(NEG + POS)


def test_error_rates_count_accepts_at_or_above_the_threshold() -> None:
    assert error_rates(Y, S, threshold=0.5) == (0.2, 0.2)    # 0.7 accepted; 0.35 rejected
    assert error_rates(Y, S, threshold=0.7) == (0.2, 0.4)    # >= : 0.7 is accepted
    assert error_rates(Y, S, threshold=0.0) == (1.0, 0.0)
    assert error_rates(Y, S, threshold=1.0) == (0.0, 1.0)
    far, frr = error_rates(np.array([1, 1]), np.array([0.2, 0.9]), threshold=0.5)
    assert math.isnan(far) and frr == 0.5


def test_equal_error_rate_of_a_known_list() -> None:
    eer, t = equal_error_rate(Y, S)
    assert eer == pytest.approx(0.2)
    assert error_rates(Y, S, threshold=t) == (0.2, 0.2)
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))[0] == 0.0


def test_threshold_for_a_target_far_and_frr() -> None:
    # the middle of the range of thresholds that give the result
    t = threshold_at_far(Y, S, far=0.0)          # above every negative: (0.7, 0.8]
    assert t == pytest.approx(0.75) and error_rates(Y, S, threshold=t) == (0.0, 0.4)
    t = threshold_at_far(Y, S, far=0.2)          # one negative may pass: (0.4, 0.6]
    assert t == pytest.approx(0.5) and error_rates(Y, S, threshold=t) == (0.2, 0.2)
    t = threshold_at_frr(Y, S, frr=0.0)          # every positive: (0.3, 0.35]
    assert t == pytest.approx(0.325) and error_rates(Y, S, threshold=t) == (0.4, 0.0)


def test_best_f1_threshold_takes_the_middle_of_a_clean_gap() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])   # any t in (0.3, 0.7] is perfect
    assert best_f1_threshold(y, scores) == pytest.approx(0.5)


def test_best_f1_threshold_beats_every_other() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.clip(0.5 * y + rng.normal(0.25, 0.2, 300), 0, 1)
    t = best_f1_threshold(y, scores)
    best = macro_f1(y, (scores >= t).astype(int), n_classes=2)
    for other in np.linspace(0, 1, 101):
        assert macro_f1(y, (scores >= other).astype(int), n_classes=2) <= best + 1e-12


@pytest.mark.parametrize(("rule", "expected"), [("f1", ("f1", None)), ("eer", ("eer", None)),
                                                ("far=0.01", ("far", 0.01)),
                                                ("frr=0.05", ("frr", 0.05))])
def test_operating_point_rules_parse(rule: str, expected: tuple[str, float | None]) -> None:
    assert parse_operating_point(rule) == expected


@pytest.mark.parametrize("rule", ["", "far", "far=1.5", "frr=-0.1", "acc", "far=x"])
def test_bad_operating_point_is_refused(rule: str) -> None:
    with pytest.raises(ConfigError, match="operating point"):
        parse_operating_point(rule)


def test_choose_threshold_follows_the_rule() -> None:
    assert choose_threshold(Y, S, rule="far=0") == pytest.approx(0.75)
    assert choose_threshold(Y, S, rule="frr=0") == pytest.approx(0.325)
    assert choose_threshold(Y, S, rule="eer") == equal_error_rate(Y, S)[1]


def test_gate_report_and_tradeoff() -> None:
    report = gate_report(Y, S, threshold=0.5)
    assert (report["far"], report["frr"]) == (0.2, 0.2)
    assert report["roc_auc"] == pytest.approx(22 / 25)   # 22 of 25 pairs ordered right
    assert report["eer"] == pytest.approx(0.2)
    assert (report["n_positive"], report["n_negative"]) == (5, 5)
    curve = error_tradeoff(Y, S)
    assert np.all(np.diff(curve["far"]) <= 0) and np.all(np.diff(curve["frr"]) >= 0)
    assert (curve["far"][0], curve["frr"][0]) == (1.0, 0.0)
    assert (curve["far"][-1], curve["frr"][-1]) == (0.0, 1.0)
    one_class = gate_report(np.array([1, 1]), np.array([0.4, 0.6]), threshold=0.5)
    assert math.isnan(one_class["roc_auc"]) and one_class["frr"] == 0.5
