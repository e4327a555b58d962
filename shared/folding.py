"""One spelling for Chinese names and texts written either way. Pure.

Residents and staff write Chinese in simplified characters and now and then in
traditional ones (電線, 缤泰社區), on keyboards that also type full-width letters and
digits. Where two spellings must be read as one (routing's features and keywords, its
duplicate addresses, a desk token's communities), they are folded first:

- :func:`simplified`: traditional characters as simplified ones, one for one
  (:data:`TRADITIONAL`, OpenCC's own dictionary);
- :func:`folded`: NFKC (full-width ``ＧＡＳ``/``１`` as ASCII), casefolded, then
  :func:`simplified`.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["TRADITIONAL", "folded", "simplified"]

# Traditional -> simplified, character by character, from OpenCC's own dictionary
# (TSCharacters, through its t2s configuration): every character of the CJK blocks that
# OpenCC turns into one other character. Built once at import (about 10 ms). A
# character-for-character map, not OpenCC's phrase conversion, so folding never changes
# a text's length and evidence points at what the resident wrote.
_CJK_BLOCKS = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))


def _opencc_characters() -> dict[str, str]:
    import opencc

    characters = [chr(code) for first, last in _CJK_BLOCKS for code in range(first, last + 1)]
    converted = opencc.OpenCC("t2s.json").convert("\n".join(characters)).split("\n")
    if len(converted) != len(characters):
        raise RuntimeError("OpenCC's t2s conversion did not keep one line per character")
    return {t: s for t, s in zip(characters, converted, strict=True) if len(s) == 1 and s != t}


TRADITIONAL: dict[str, str] = _opencc_characters()
_FOLD = str.maketrans(TRADITIONAL)
_TRADITIONAL = re.compile(f"[{''.join(TRADITIONAL)}]")  # most texts have none to fold


def simplified(text: str) -> str:
    """``text`` with its traditional characters as simplified ones, one for one
    (:data:`TRADITIONAL`); nothing else changes.

    >>> simplified("麗德花園3號樓")
    '丽德花园3号楼'
    """
    return text.translate(_FOLD) if _TRADITIONAL.search(text) else text


def folded(text: str) -> str:
    """``text`` as two spellings of one name compare: NFKC, casefolded, simplified.

    >>> folded("缤泰社區") == folded("缤泰社区")
    True
    """
    return simplified(unicodedata.normalize("NFKC", text).casefold())
