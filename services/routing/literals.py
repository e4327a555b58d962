"""Literal strings a regular expression cannot match without. Pure.

A hazard cue (``hazards.py``) is a large pattern of alternatives with gaps between
their parts (``(电线|插座).{0,8}(冒烟|着火)``), and most reports hold none of them:
scanning each pattern over each report is most of what the cues cost. For every
pattern, :func:`required_literals` works out a set of plain strings of which every
match must contain at least one (here {冒烟, 着火, ...}, or {电线, 插座}); when a text
holds none of them, the pattern cannot match it, and a search for the strings
themselves (:func:`prefilter`: one alternation of plain strings, which the ``re``
engine scans far faster than the cue) says so. When the text holds one, the pattern is scanned as before, so
what is found never changes: the test only skips scans that cannot find anything.

The set is read off the pattern's parse tree (the ``re`` module's own parser), by
rules that each keep "every match contains one of these":

- a part that can only match one of a few strings (a literal character, a class of
  a few listed characters, an alternation or an optional part made of such) is that
  set of strings; neighbouring parts of a sequence match side by side, so a run of
  them is the set of their concatenations (``(压|靠)在`` is {压在, 靠在});
- a sequence needs what any one of its parts (or runs) needs: the one whose shortest
  string is longest is taken, the fewest false alarms;
- an alternation needs one of what its branches need (the union);
- a repetition at least once needs what its body needs; one that may be absent, a
  gap (``.``), a class of other characters, a word boundary or a look-around needs
  nothing;
- a string that contains another string of the set is dropped: the shorter one is
  found wherever the longer one is.

Where nothing can be said (a pattern that can match without any literal, case-
insensitive matching, back-references), :func:`required_literals` returns ``None``
and the pattern is always scanned.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # the stdlib's own parser of patterns (read only)
from collections.abc import Callable
from itertools import product
from re._constants import (
    BRANCH,
    IN,
    LITERAL,
    MAX_REPEAT,
    MIN_REPEAT,
    POSSESSIVE_REPEAT,
    SUBPATTERN,
)

__all__ = ["may_match", "prefilter", "required_literals"]

_REPEATS = (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)
_LIMIT = 64  # the most strings a set of exact matches is worked out to

Strings = frozenset[str] | None  # None: nothing known


def required_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Strings of which every match of ``pattern`` contains one, or ``None`` (see the
    module doc). Never empty, and never holding the empty string."""
    if pattern.flags & re.IGNORECASE:
        return None
    return _needs(list(sre_parse.parse(pattern.pattern, pattern.flags)))


def prefilter(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """A pattern that finds one of :func:`required_literals` of ``pattern``, or ``None``
    when nothing is required (``pattern`` must always be scanned)."""
    needs = required_literals(pattern)
    if needs is None:
        return None
    return re.compile("|".join(re.escape(literal) for literal in sorted(needs)))


def may_match(prefiltered: re.Pattern[str] | None, text: str) -> bool:
    """False only when ``text`` holds none of the strings the :func:`prefilter` looks
    for: the pattern it was made from cannot match ``text``."""
    return prefiltered is None or prefiltered.search(text) is not None


def _needs(items: list) -> Strings:
    """What a sequence of parsed items needs: the best of its parts' and runs' needs."""
    candidates: list[frozenset[str]] = []
    run: frozenset[str] | None = None  # the exact strings of the current run of parts

    def close_run() -> None:
        if run is not None and "" not in run:
            candidates.append(_minimal(run))

    for op, arg in items:
        exact = _exact(op, arg)
        if exact is not None:
            joined = None if run is None else _joined(run, exact)
            if joined is None:  # the first of a run, or the run grew too large
                close_run()
                joined = exact
            run = joined
            continue
        close_run()
        run = None
        needs = _item_needs(op, arg)
        if needs is not None:
            candidates.append(needs)
    close_run()
    if not candidates:
        return None
    return max(candidates, key=lambda s: (min(map(len, s)), -len(s)))


def _item_needs(op, arg) -> Strings:
    """What one parsed item that is not exact needs; ``None``: nothing known."""
    if op is SUBPATTERN:
        return _group(arg, _needs)
    if op is BRANCH:
        found = _branches(arg, _needs)
        return None if found is None else _minimal(found)
    if op in _REPEATS:
        least, _most, body = arg
        return _needs(list(body)) if least >= 1 else None
    return None  # ., \b, look-arounds, wide classes, references: nothing is required


def _exact(op, arg) -> Strings:
    """The strings a parsed item can match, when they are few; else ``None``."""
    if op is LITERAL:
        return frozenset((chr(arg),))
    if op is IN:
        if len(arg) <= _LIMIT and all(kind is LITERAL for kind, _ in arg):
            return frozenset(chr(code) for _, code in arg)
        return None
    if op is SUBPATTERN:
        return _group(arg, _exact_sequence)
    if op is BRANCH:
        found = _branches(arg, _exact_sequence)
        return found if found is not None and len(found) <= _LIMIT else None
    if op in _REPEATS:
        least, most, body = arg
        exact = _exact_sequence(list(body))
        if exact is None or most != 1:
            return None
        return exact | {""} if least == 0 else exact
    return None


def _group(arg, worked_out: Callable[[list], Strings]) -> Strings:
    """``worked_out`` of a group's body; ``None`` for a case-insensitive group."""
    _number, add_flags, _del_flags, body = arg
    return None if add_flags & re.IGNORECASE else worked_out(list(body))


def _branches(arg, worked_out: Callable[[list], Strings]) -> Strings:
    """The union of ``worked_out`` of each branch of an alternation; ``None`` when any
    branch's is."""
    found: set[str] = set()
    for branch in arg[1]:
        strings = worked_out(list(branch))
        if strings is None:
            return None
        found |= strings
    return frozenset(found)


def _exact_sequence(items: list) -> Strings:
    """The strings a sequence of parsed items can match, when they are few."""
    joined: frozenset[str] | None = frozenset(("",))
    for op, arg in items:
        exact = _exact(op, arg)
        if exact is None:
            return None
        joined = _joined(joined, exact)
        if joined is None:
            return None
    return joined


def _joined(first: frozenset[str], then: frozenset[str]) -> Strings:
    """Every string of ``first`` followed by one of ``then``; ``None`` when too many."""
    if len(first) * len(then) > _LIMIT:
        return None
    return frozenset(a + b for a, b in product(first, then))


def _minimal(strings: frozenset[str]) -> frozenset[str]:
    """``strings`` without those that contain another of them."""
    return frozenset(s for s in strings if not any(t != s and t in s for t in strings))
