"""Setting a model's urgency threshold on held-out reports: ``whistle routing calibrate``.

Training sets the threshold out of fold, on the training reports themselves: the highest
that still catches ``URGENT_RECALL`` of them. That line is drawn by the hardest few urgent
training reports, and the training split holds reports written to be hard for urgency
(``corpus/README.md``), so it may sit where reports written another way do not need it.
Calibration draws the same line (:func:`training.urgency_threshold`, the same recall) on
labelled reports the model never learned from and that were written like the reports it
will meet: a district's held-out corrections, or ``corpus/dev.jsonl``. Nothing else in the
model changes; the result is a new artefact whose manifest says where its threshold came
from. Pure but for the classifier it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from services.routing.learned import LearnedClassifier, Router
from services.routing.training import URGENT_RECALL, corpus_hash, urgency_threshold

__all__ = ["Calibration", "CalibrationError", "calibrate", "urgency_figures"]

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


def calibrate(classifier: LearnedClassifier, examples: Sequence[dict], source: str,
              recall: float = URGENT_RECALL, now: datetime | None = None) -> Calibration:
    """``classifier``'s model with its urgency threshold set on ``examples`` (labelled
    reports it was not trained on) to catch ``recall`` of their urgent ones."""
    router = classifier.router
    if router.urgency_cascade is not None:
        raise CalibrationError("this model decides urgency in two looks (an urgency cascade), "
                               "each with its own threshold; calibrate a model without one")
    if not 0.5 <= recall <= 1.0:
        raise CalibrationError(f"recall must be between 0.5 and 1, not {recall}")
    urgent = np.array([bool(e["urgent"]) for e in examples])
    if urgent.sum() < MIN_URGENT or (~urgent).sum() < MIN_URGENT:
        raise CalibrationError(f"{int(urgent.sum())} urgent and {int((~urgent).sum())} other "
                               f"reports: at least {MIN_URGENT} of each are needed")
    readings = [classifier.urgency_reading(e["text"]) for e in examples]
    probability = np.array([p for p, _ in readings])
    forced = np.array([f for _, f in readings])
    threshold = urgency_threshold(probability, forced, urgent, recall)
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
            "recall_target": recall,
            "before": before, "after": after,
        },
    }
    version = f"{now:%Y%m%dT%H%M%SZ}-{router.version.rsplit('-', 1)[-1]}-cal{data_hash[:6]}"
    return Calibration(replace(router, version=version, urgent_at=threshold, manifest=manifest),
                       before, after)
