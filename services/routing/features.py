"""The terms a learned router reads in a report: character n-grams and words. Pure.

Residents write Chinese (now and then in traditional characters), English, or both
in one breath, colloquially and without the canonical nouns. A word list cannot
follow that; short character sequences can: 冒火花, 臭鸡蛋, 搭在树上 and "spark" in
"sparking" are all visible to a linear model as n-grams. :func:`terms` turns a text
into the bag of terms both the trainer and the runtime classifier use, so the two
can never disagree about what a feature is:

- Han runs: every 1-, 2- and 3-character sequence (no word segmenter: none is
  reliable on colloquial text, and n-grams are what a segmenter would guess from);
- Latin words: the word itself (``w:sparks``), each pair of neighbouring words
  (``w:rotten eggs``), and the 3- to 5-character pieces of the word padded with
  spaces (`` spa``, ``spark``), so "sparking", "sparks" and "sparked" share most
  of their features, and British and American spellings share theirs.

Traditional characters are folded into simplified ones first (``shared.folding``,
OpenCC's character dictionary), so 電線 and 电线 are the same feature.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

from services.routing.rules import normalise
from shared.folding import simplified

__all__ = ["display_term", "fold", "term_counts", "terms", "terms_in", "weighed_words"]

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_HAN}]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PIECE_SIZES = (3, 4, 5)


def fold(text: str) -> str:
    """The text as the features see it: normalised (``rules.normalise``), traditional
    characters folded to simplified."""
    return simplified(normalise(text))


def terms(text: str) -> list[str]:
    """Every term of ``text``, repeated as often as it occurs (see the module doc).

    >>> terms("电线 sparks")[:3]
    ['电', '线', '电线']
    """
    return terms_in(fold(text))


def terms_in(folded: str) -> list[str]:
    """:func:`terms` of a text already folded (:func:`fold`), in the same order."""
    found: list[str] = []
    for run in _HAN_RUN.findall(folded):
        found.extend(run)  # the 1-character terms
        found.extend([run[i:i + 2] for i in range(len(run) - 1)])
        found.extend([run[i:i + 3] for i in range(len(run) - 2)])
    previous = None
    for word in _WORD.findall(folded):
        found.append("w:" + word)
        if previous is not None:
            found.append(f"w:{previous} {word}")
        found.extend(_pieces(word))
        previous = word
    return found


@lru_cache(maxsize=8192)
def _pieces(word: str) -> tuple[str, ...]:
    """The 3- to 5-character pieces of ``word`` padded with spaces, as terms (words
    recur from report to report: each is cut once)."""
    padded = f" {word} "
    return tuple("c:" + padded[j:j + size] for size in _PIECE_SIZES
                 for j in range(len(padded) - size + 1))


def term_counts(text: str) -> Counter[str]:
    """How often each term occurs in ``text``."""
    return Counter(terms(text))


@lru_cache(maxsize=4096)  # the same strong terms are shown report after report
def display_term(term: str) -> str:
    """A term as a desk worker reads it: ``w:rotten eggs`` -> ``rotten eggs``,
    ``c: spar`` -> ``spar…``."""
    if term.startswith("w:"):
        return term[2:]
    if term.startswith("c:"):
        piece = term[2:]
        return ("" if piece.startswith(" ") else "…") + piece.strip() + (
            "" if piece.endswith(" ") else "…")
    return term


_AS_WRITTEN = re.compile(r"\w+(?:['\u2019]\w+)*")


def _as_written(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """How the report wrote its words and its Han n-grams: (folded word -> the word as
    written, folded n-gram -> the n-gram as written, in traditional characters if so)."""
    words: dict[str, str] = {}
    for span in _AS_WRITTEN.findall(text):
        folded = fold(span)
        if _WORD.fullmatch(folded):
            words.setdefault(folded, span)
    grams: dict[str, str] = {}
    for run in _HAN_RUN.findall(normalise(text)):  # folding changes no Han run's length
        folded = simplified(run)
        for size in (1, 2, 3):
            for i in range(len(run) - size + 1):
                grams.setdefault(folded[i:i + size], run[i:i + size])
    return words, grams


def weighed_words(text: str, weights: Mapping[str, float],
                  count: int) -> list[tuple[str, float]]:
    """The words and n-grams of ``text`` that weighed most, each once, as the report
    wrote them: ``weights`` is each term's part in a score (:func:`terms` of ``text``).

    A word's pieces (`` rad``, ``adiat``...) are credited to the word, with the word's
    own term: "radiator" once, not eight of its pieces; a piece found in several of the
    report's words is shared between them by its occurrences. A pair of words is shown
    as the pair; a Han n-gram as itself (a word segmenter is no more reliable here than
    in the features). Only what weighed for the score (a positive sum) is shown.
    """
    written, grams = _as_written(text)
    words = Counter(_WORD.findall(fold(text)))
    totals: dict[str, float] = {}

    def credit(shown: str, weight: float) -> None:
        totals[shown] = totals.get(shown, 0.0) + weight

    for term, weight in weights.items():
        if term.startswith("c:"):  # a piece of some of the report's words
            holders = {w: n * _pieces(w).count(term) for w, n in words.items()}
            share = sum(holders.values())
            for word, held in holders.items():
                if held:
                    credit(written.get(word, word), weight * held / share)
        elif term.startswith("w:"):
            credit(" ".join(written.get(w, w) for w in term[2:].split(" ")), weight)
        else:
            credit(grams.get(term, term), weight)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [(shown, round(weight, 4)) for shown, weight in ranked if weight > 0]
