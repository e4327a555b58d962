"""Is a keyword mentioned only to be denied? "没有停电" is not a power cut. Pure.

A keyword hit is *negated* when a negating word stands just before it in the same
clause (no punctuation in between):

- Chinese: 没有, 没, 不是, 不, 并非, 无, 未, 非 ending at most two characters
  before the keyword (没有再停电, 不是停电, 没停水); not 别 ("能不能别停水了" complains
  of water cuts);
- English: no, not, never, without, nor, none, n't ending at most three words
  before it ("there is no gas smell", "it isn't a power cut", "I don't smell gas").

Some phrases only look negative, and a hit after them still counts:

- "not only", 不停, 不断 (continuously), 不少, 不仅, 不光, 不得不, 无论, 没完没了, and
  questions: 算不算, 能不能, 会不会 ("这个算不算扰民" asks about a nuisance);
- doubt is not denial: 不知道, 不确定, 不清楚, 是不是, 是否, "not sure", "don't know",
  "no idea", "can't tell", "whether": a resident unsure whether it is gas is still
  reporting a possible gas leak (safety first).

Keywords that contain a negation themselves (没电了, 不出水, "no water") are not
affected: only what stands *before* a hit is looked at.

The text is the normalised text the matcher searches (``rules.normalise``).
"""

from __future__ import annotations

import re

__all__ = ["negation_before"]

# Clause boundaries: a negation does not reach across them.
_CLAUSE_END = re.compile(r"[,.;:!?，。；：！？、\n()（）…]|\bbut\b|但是|可是|而是|就是")

# Not 别: "能不能别停水了" asks for the water cuts to stop; they happen.
_ZH_NEGATORS = ("并没有", "没有", "并非", "不是", "没", "不", "无", "未", "非")
_ZH_NOT_NEGATING = (
    "不停", "不断", "不少", "不仅", "不但", "不光", "不止", "不久", "不管", "不得不", "不了",
    "无论", "没完没了", "不知道", "不确定", "不清楚", "不晓得", "不懂", "是不是", "是否", "有没有",
    "不会吧", "无法", "非常", "无人", "算不算", "能不能", "会不会", "要不要",
)
_ZH_GAP = 2  # characters allowed between the negator and the keyword (没有 *再* 停电)

_EN_NEGATORS = re.compile(r"(?<![a-z])(?:no|not|never|without|nor|none|[a-z]+n't|cannot)(?![a-z])")
_EN_NOT_NEGATING = re.compile(
    r"not only|not just|no longer|not sure|not certain|don't know|do not know|no idea|"
    r"can't tell|cannot tell|not clear|whether|don't think it's not")
_EN_GAP_WORDS = 3  # words allowed between the negator and the keyword

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def negation_before(text: str, start: int) -> str | None:
    """The negating word that denies the keyword found at ``text[start:]``, or None."""
    clause = _clause_before(text, start)
    if not clause:
        return None
    return _zh_negation(clause) or _en_negation(clause)


def _clause_before(text: str, start: int) -> str:
    before = text[max(0, start - 60):start]
    ends = list(_CLAUSE_END.finditer(before))
    return before[ends[-1].end():] if ends else before


def _zh_negation(clause: str) -> str | None:
    tail = clause.rstrip()
    if not tail or not _CJK.search(tail[-(_ZH_GAP + 4):]):
        return None
    window = tail[-(_ZH_GAP + 3):]
    for negator in _ZH_NEGATORS:
        at = window.rfind(negator)
        if at < 0 or len(window) - (at + len(negator)) > _ZH_GAP:
            continue
        # The phrase around the negator: does it only look negative (不停, 是不是)?
        absolute = len(tail) - len(window) + at
        around = tail[max(0, absolute - 2):absolute + len(negator) + 3]
        if any(phrase in around and _covers(around, phrase, absolute - max(0, absolute - 2),
                                              len(negator))
               for phrase in _ZH_NOT_NEGATING):
            continue
        if any(phrase in tail for phrase in ("不知道", "不确定", "不清楚", "是不是", "是否")):
            return None  # doubt in the clause: a possible hazard is still reported
        return negator
    return None


def _covers(around: str, phrase: str, negator_at: int, negator_len: int) -> bool:
    """Whether an occurrence of ``phrase`` in ``around`` overlaps the negator."""
    start = around.find(phrase)
    while start >= 0:
        if start < negator_at + negator_len and negator_at < start + len(phrase):
            return True
        start = around.find(phrase, start + 1)
    return False


def _en_negation(clause: str) -> str | None:
    words = clause.split()
    window = " ".join(words[-(_EN_GAP_WORDS + 1):])
    if not window or _EN_NOT_NEGATING.search(" ".join(words[-8:])):
        return None
    found = list(_EN_NEGATORS.finditer(window))
    return found[-1].group(0) if found else None
