"""Setting a model's urgency threshold on held-out reports: ``whistle routing calibrate``.

Training sets the threshold out of fold, on the training reports themselves: the highest
that still catches ``URGENT_RECALL`` of them. That line is drawn by the hardest few urgent
training reports, and the training split holds reports written to be hard for urgency
(``corpus/README.md``), so it may sit where reports written another way do not need it.
Calibration draws the line on labelled reports the model never learned from and that were
written like the reports it will meet (a district's held-out corrections, or
``corpus/holdout.jsonl``), by one of two policies: the same recall as training
(:func:`training.urgency_threshold`), or a false-alarm budget (:func:`false_alarm_threshold`:
the lowest line that flags at most that share of the harmless reports, so the budget is
spent on recall). Nothing else in the model changes; the result is a new artefact whose
manifest says where its threshold came from. Pure but for the classifier it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from services.routing.learned import LearnedClassifier, Router
from services.routing.training import URGENT_RECALL, corpus_hash, urgency_threshold

__all__ = ["Calibration", "CalibrationError", "calibrate", "false_alarm_threshold",
           "urgency_figures"]

MIN_URGENT = 20  # fewer urgent reports than this cannot place a line at 98.5% recall


class CalibrationError(ValueError):
    """The model or the held-out reports cannot be calibrated on (the message says why)."""


@dataclass(frozen=True)
class Calibration:
    router: Router            # the calibrated model, under a version of its own
    before: dict              # urgency figures on the held-out reports at the old threshold
    after: dict               # ... and at the new one


def urgency_figures(probability: np.ndarray, forced: np.ndarray, urgent: np.ndarray,
                    threshold: float) -> dict:
    """Urgent recall and false urgent when ``p >= threshold or forced`` is urgent.

    >>> urgency_figures(np.array([.9, .3, .6]), np.array([False, False, False]),
    ...                 np.array([True, True, False]), .5)
    {'threshold': 0.5, 'urgent_recall': 0.5, 'false_urgent_rate': 1.0, 'urgent_reports': 2, 'other_reports': 1}
    """
    flagged = (probability >= threshold) | forced
    urgent_count, other_count = int(urgent.sum()), int((~urgent).sum())
    return {"threshold": round(float(threshold), 6),
            "urgent_recall": round(float((flagged & urgent).sum() / max(urgent_count, 1)), 4),
            "false_urgent_rate": round(float((flagged & ~urgent).sum() / max(other_count, 1)), 4),
            "urgent_reports": urgent_count, "other_reports": other_count}


def false_alarm_threshold(probability: np.ndarray, forced: np.ndarray, urgent: np.ndarray,
                          budget: float) -> float:
    """The lowest threshold at which ``p >= t or forced`` flags at most ``budget`` of the
    reports that are not urgent: halfway between the last harmless report it may flag and
    the first it may not. Raises CalibrationError when the cues alone flag more.

    >>> false_alarm_threshold(np.array([.9, .7, .5, .3, .1]), np.zeros(5, bool),
    ...                       np.array([True, False, False, False, False]), .25)
    0.6
    """
    harmless = ~urgent
    allowed = int(np.floor(budget * harmless.sum() + 1e-9))
    cued = int((harmless & forced).sum())
    if cued > allowed:
        raise CalibrationError(f"hazard cues alone flag {cued} of the {int(harmless.sum())} "
                               f"reports that are not urgent, more than {budget:.1%}")
    scores = np.sort(probability[harmless & ~forced])[::-1]
    may_flag = allowed - cued
    if may_flag >= scores.size:
        return 0.0
    above = scores[may_flag - 1] if may_flag else 1.0
    line = round(float((above + scores[may_flag]) / 2), 6)
    # Ties, or rounding, can put the line on a report it must not flag: move it up.
    while ((probability >= line) & harmless & ~forced).sum() > may_flag:
        line = round(line + 1e-6, 6)
    return line


def calibrate(classifier: LearnedClassifier, examples: Sequence[dict], source: str,
              recall: float = URGENT_RECALL, now: datetime | None = None,
              false_urgent: float | None = None) -> Calibration:
    """``classifier``'s model with its urgency threshold set on ``examples`` (labelled
    reports it was not trained on): the highest that catches ``recall`` of their urgent
    ones, or, given ``false_urgent``, the lowest that flags at most that share of the
    others (spend the false-alarm budget on recall)."""
    router = classifier.router
    if router.urgency_cascade is not None:
        raise CalibrationError("this model decides urgency in two looks (an urgency cascade), "
                               "each with its own threshold; calibrate a model without one")
    if false_urgent is None and not 0.5 <= recall <= 1.0:
        raise CalibrationError(f"recall must be between 0.5 and 1, not {recall}")
    if false_urgent is not None and not 0.0 <= false_urgent < 0.5:
        raise CalibrationError(f"false urgent must be at least 0 and below 0.5, not "
                               f"{false_urgent}")
    urgent = np.array([bool(e["urgent"]) for e in examples])
    if urgent.sum() < MIN_URGENT or (~urgent).sum() < MIN_URGENT:
        raise CalibrationError(f"{int(urgent.sum())} urgent and {int((~urgent).sum())} other "
                               f"reports: at least {MIN_URGENT} of each are needed")
    readings = [classifier.urgency_reading(e["text"]) for e in examples]
    probability = np.array([p for p, _ in readings])
    forced = np.array([f for _, f in readings])
    threshold = (urgency_threshold(probability, forced, urgent, recall) if false_urgent is None
                 else false_alarm_threshold(probability, forced, urgent, false_urgent))
    now = now or datetime.now(UTC)
    data_hash = corpus_hash(examples)
    before = urgency_figures(probability, forced, urgent, router.urgent_at)
    after = urgency_figures(probability, forced, urgent, threshold)
    manifest = {
        **router.manifest,
        "calibration": {
            "calibrated_at": now.isoformat(timespec="seconds"),
            "from_version": router.version,
            "held_out": {"source": source, "examples": len(examples), "sha256_12": data_hash},
            "policy": ({"urgent_recall": recall} if false_urgent is None
                       else {"false_urgent_at_most": false_urgent}),
            "before": before, "after": after,
        },
    }
    version = f"{now:%Y%m%dT%H%M%SZ}-{router.version.rsplit('-', 1)[-1]}-cal{data_hash[:6]}"
    return Calibration(replace(router, version=version, urgent_at=threshold, manifest=manifest),
                       before, after)
