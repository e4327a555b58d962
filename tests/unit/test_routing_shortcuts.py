"""Routing's cheaper ways of working something out give what the long way gives, to
the last bit: each is pinned here against the plain version it replaced, on every
training report and on the edge cases (no known term, a term counted past the table
of ``sublinear_tf``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.routing.classifier import load_classifier
from services.routing.domain import _pairs
from services.routing.features import fold, terms_in
from services.routing.learned import LearnedClassifier, sublinear_tf
from tests.support.routing_outputs import reports

EDGE_CASES = ["", "   ", "qqqq zzzz xxxx", "电" * 300, "gas " * 300, "电线 sparks 没有煤气味"]


@pytest.fixture(scope="module")
def classifier() -> LearnedClassifier:
    loaded = load_classifier(None, background=lambda work: None)  # no encoder needed
    assert isinstance(loaded, LearnedClassifier)
    return loaded


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [report["text"] for report in reports()] + EDGE_CASES


def long_vector(model, folded: str) -> tuple[np.ndarray, np.ndarray]:
    """The TF-IDF vector with arrays and masks, term by term (the way it was written)."""
    counts = Counter(terms_in(folded))
    columns = np.array([model.vocabulary.get(term, -1) for term in counts], dtype=np.int64)
    known = columns >= 0
    if not known.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    columns = columns[known]
    occurrences = np.array(list(counts.values()), dtype=np.int64)[known]
    values = sublinear_tf(occurrences) * model.idf[columns]
    norm = float(np.sqrt(values @ values))
    return columns, values / norm if norm else values


def test_the_tfidf_vector_is_the_long_ways_to_the_last_bit(classifier, texts):
    model = classifier.router.category
    for text in texts:
        columns, values = model.vector_in(fold(text))
        want_columns, want_values = long_vector(model, fold(text))
        assert columns.dtype == want_columns.dtype and values.dtype == want_values.dtype
        assert columns.tolist() == want_columns.tolist(), text
        assert values.tobytes() == want_values.tobytes(), text


def long_strongest(model, columns, contributions, count):
    """The strongest terms, read one numpy scalar at a time (the way it was written)."""
    from services.routing.features import display_term

    order = np.argsort(-contributions, kind="stable")[:count]
    return [(display_term(model.terms[columns[i]]), round(float(contributions[i]), 4))
            for i in order if contributions[i] > 0]


def test_the_evidence_and_the_top_are_the_long_ways(classifier, texts):
    model = classifier.router.category
    for text in texts:
        columns, values = model.vector_in(fold(text))
        probabilities = model.probabilities(columns, values)
        order = np.argsort(-probabilities, kind="stable")[:5]
        reading = classifier.classify(text)
        assert list(reading.top) == [(model.classes[i], float(probabilities[i])) for i in order]
        for row in (int(order[0]), int(order[-1])):
            want = (long_strongest(model, columns, model.coef[row, columns] * values, 8)
                    if len(columns) else [])
            assert model.evidence(columns, values, row) == want, text


@pytest.mark.parametrize("text", ["", "a", "ab", "停电了", "no gas smell, 没有停电 ok"])
def test_a_texts_pairs_of_characters_are_its_two_character_slices(text):
    assert _pairs(text) == {text[i:i + 2] for i in range(len(text) - 1)}

