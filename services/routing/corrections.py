"""The desk's corrections as labelled examples: the router learns from its desk. Pure.

Every triage decision and every reroute is kept as a :class:`Correction` (the
report's text, the category the desk chose, whether it is urgent, the supporting
agencies, who decided and when). Where they are kept is the storage adapter's
business (``corrections_store``: Redis today). ``whistle routing corrections
--export FILE`` writes them in the corpus format (``corpus/README.md``), one
example per report (the desk's latest word on it); a district puts the file in
``corpus/corrections/`` and retrains, and the trainer folds them in with
:func:`load_corrections`::

    from services.routing.corrections import load_corrections
    examples = train_examples + load_corrections()          # corpus/corrections/*.jsonl

Personal data: the text is stored with phone numbers, email addresses and the
resident's name masked (``shared.privacy.scrub``), as a corpus may be shared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts import Channel, Language, RouteCorrected
from shared.folding import TRADITIONAL
from shared.issue import IssueRecord
from shared.privacy import scrub

__all__ = [
    "CORRECTIONS_DIR", "Correction", "CorpusExample", "corpus_lang", "correction_from",
    "latest_per_issue",
    "CorpusError", "CorpusLabels", "load_corrections", "read_corpus", "to_corpus", "write_jsonl",
]

CORRECTIONS_DIR = Path(__file__).resolve().parents[2] / "corpus" / "corrections"

CorpusLang = Literal["zh", "zh-Hant", "en-GB", "en-US", "mixed"]
CorpusChannel = Literal["desk", "hotline", "miniprogram"]

# Issue channels as the corpus names them (how a report came in shapes how it reads).
_CHANNELS: dict[str, CorpusChannel] = {
    Channel.desk.value: "desk", Channel.hotline.value: "hotline",
    Channel.app.value: "miniprogram", Channel.grid_patrol.value: "desk",
}


class Correction(BaseModel):
    """One desk decision about one report, as stored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    correction_id: str  # "<issue id>:<route.corrected event id>"
    issue_id: str
    source: Literal["triage", "reroute"]
    text: str
    language: Language
    channel: Channel
    category: str
    previous_category: str | None = None  # what routing had chosen (None: held, no guess)
    urgent: bool
    support: list[str] = Field(default_factory=list)
    by: str  # the desk staff id
    at: datetime
    reason: str | None = None


class CorpusExample(BaseModel):
    """One line of a corpus file (``corpus/README.md``: the format)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][A-Za-z0-9_-]*$")
    text: str = Field(min_length=1)
    lang: CorpusLang
    category: str
    urgent: bool
    support: list[str] = Field(default_factory=list)
    channel: CorpusChannel


class CorpusLabels(BaseModel):
    """What training and measuring read from a corpus line: the text and its labels
    (the other fields of the format are the writers' notes, and may be left out)."""

    model_config = ConfigDict(extra="allow")

    text: str = Field(min_length=1)
    category: str
    urgent: bool


def correction_from(event: RouteCorrected, record: IssueRecord,
                    contact: dict[str, str] | None) -> Correction:
    """The labelled example a ``route.corrected`` event stands for, the report's text
    and the desk's reason with phone numbers, email addresses and the resident's name
    masked (a reason may quote the resident: "孙建国 138… says it is the wiring")."""
    name = (contact or {}).get("name")
    names = frozenset([name] if name else [])
    return Correction(
        correction_id=f"{event.issue_id}:{event.event_id}", issue_id=event.issue_id,
        source=event.source, text=scrub(record.description, names),
        language=record.language, channel=record.channel, category=event.category,
        previous_category=event.previous_category, urgent=event.urgent,
        support=list(event.support), by=event.staff_id, at=event.occurred_at,
        reason=scrub(event.reason, names))


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
_AMERICAN = re.compile(r"\b(elevator|sidewalk|color|neighbor\w*|apartment|trash|garbage|"
                       r"center|faucet|gray|favor\w*)\b", re.IGNORECASE)


def corpus_lang(text: str, language: Language) -> CorpusLang:
    """The corpus ``lang`` of a report, guessed from its script and spelling as the corpus
    labels its own (``corpus/README.md``): ``mixed`` for Chinese with one English word in
    it ("整栋楼blackout了"; a brand or plate in capitals, "黑色SUV", "KTV", is not English),
    ``zh-Hant`` for Chinese with a traditional character in it (any of those the features
    fold, ``shared.folding.TRADITIONAL``: "電梯壞了")."""
    han = len(_CJK.findall(text))
    english = [w for w in _LATIN_WORD.findall(text) if not w.isupper()]
    if han and english:
        return "mixed"
    if han:
        return "zh-Hant" if any(ch in TRADITIONAL for ch in text) else "zh"
    if language is Language.zh and not english:
        return "zh"
    return "en-US" if _AMERICAN.search(text) else "en-GB"


def latest_per_issue(corrections: Iterable[Correction]) -> list[Correction]:
    """One correction per report: the desk's latest word on it, oldest report first."""
    latest: dict[str, Correction] = {}
    for correction in sorted(corrections, key=lambda c: (c.at, c.correction_id)):
        latest[correction.issue_id] = correction
    return sorted(latest.values(), key=lambda c: (c.issue_id, c.at))


def to_corpus(correction: Correction) -> CorpusExample:
    """The correction as a corpus example (id ``c`` + the issue id)."""
    return CorpusExample(
        id="c" + correction.issue_id.replace("WH-", "").replace("-", "_"),
        text=correction.text, lang=corpus_lang(correction.text, correction.language),
        category=correction.category, urgent=correction.urgent,
        support=list(correction.support), channel=_CHANNELS[correction.channel.value])


def write_jsonl(examples: Iterable[CorpusExample], out) -> int:
    """Write examples one JSON object a line (UTF-8, Chinese unescaped); how many."""
    count = 0
    for example in examples:
        out.write(json.dumps(example.model_dump(), ensure_ascii=False) + "\n")
        count += 1
    return count


class CorpusError(ValueError):
    """A corpus file that cannot be read; its text names the file, the line and the field."""


def read_corpus(path: str | Path, categories: Iterable[str] | None = None,
                strict: bool = False) -> list[dict]:
    """The examples of a corpus file (``corpus/README.md``: the format), as dicts, each
    with a text, a category and whether it is urgent (``strict``: every field of the
    format, as :class:`CorpusExample`). With ``categories``, a category outside them is
    refused too.

    Raises :class:`CorpusError` ``FILE:LINE: what is wrong`` for the first bad line.
    """
    known = frozenset(categories) if categories is not None else None
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise CorpusError(f"{where}: not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise CorpusError(f"{where}: not a JSON object")
        try:
            example = (CorpusExample if strict else CorpusLabels).model_validate(raw)
        except ValidationError as exc:
            raise CorpusError(f"{where}: {_first_problem(exc)}") from None
        if known is not None and example.category not in known:
            raise CorpusError(f"{where}: field \"category\": unknown category "
                              f"{example.category!r}")
        examples.append(example.model_dump())
    return examples


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "line"
    if error["type"] == "missing":
        return f"field \"{field}\" is missing"
    if error["type"] == "extra_forbidden":
        return f"field \"{field}\" is not part of the corpus format"
    return f"field \"{field}\": {error['msg']}"


def load_corrections(directory: str | Path | None = None,
                     categories: Iterable[str] | None = None) -> list[dict]:
    """Every example in ``directory/*.jsonl`` (default ``corpus/corrections``), validated
    by :func:`read_corpus`, for a trainer to fold in. A report corrected in several files
    counts once: the file that sorts last wins (name exports by date).

    Raises :class:`CorpusError` naming the file and line of a malformed example, and
    ``FileNotFoundError`` when the directory does not exist.
    """
    folder = Path(directory) if directory is not None else CORRECTIONS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"no corrections directory {folder}")
    by_id: dict[str, dict] = {}
    for file in sorted(folder.glob("*.jsonl")):
        for example in read_corpus(file, categories, strict=True):
            by_id[example["id"]] = example
    return list(by_id.values())
