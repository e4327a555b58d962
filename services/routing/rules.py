"""The routing rules file: its schema, loading, and error reporting with line numbers.

The rules are configuration edited by people at the street office, not code, so a
broken file must say *where* it is broken: every problem is reported at once as
``<source>:<line>: <dotted.path>: <message>``. Pydantic checks the structure;
the cross-references between sections (leads and supports naming agencies,
unique categories, keyword sanity) are checked on the raw data so they are
reported even when other parts of the file are structurally wrong.

Pure: no nameko, no Redis.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from shared.contracts import EscalationLevel, Language, Priority, Sector, Slug

SHIPPED_RULES = Path(__file__).with_name("rules.yaml")

# ------------------------------------------------------------------- normalising

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_CURLY = re.compile("[" + "".join(map(chr, _QUOTES)) + "]")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=256)  # routing's classifier and keyword matcher both read each report
def normalise(text: str) -> str:
    """The form both texts and keywords are compared in.

    NFKC turns full-width ``ＧＡＳ``/``１``, common on Chinese keyboards, into ASCII;
    casefold ignores case; curly apostrophes from phones become ``'``; runs of
    whitespace become one space so multi-word keywords match across line breaks.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    if _CURLY.search(text):  # translating char by char costs more than looking
        text = text.translate(_QUOTES)
    return _SPACES.sub(" ", text)


def _looked_up(mapping: dict, key: str, what: str):
    """``mapping[key]``; a KeyError naming what is unknown otherwise."""
    try:
        return mapping[key]
    except KeyError:
        raise KeyError(f"unknown {what} {key!r}") from None


def needle(keyword: str) -> str:
    """The keyword as it appears in normalised text (what its pattern matches literally)."""
    return normalise(keyword).strip()

# ----------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_DURATION = re.compile(r"^(?:\d+\s*[smhdw]\s*)+$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"2h"``, ``"30m"``, ``"7d"``, ``"1h30m"`` or an int of seconds -> timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # bool is an int: `yes` in YAML must not mean 1 second
        raise ValueError("expected a duration like '2h', '30m', '7d' or seconds")
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and _DURATION.match(value.strip().lower()):
        seconds = sum(int(n) * _UNIT_SECONDS[u]
                      for n, u in _DURATION_PART.findall(value.strip().lower()))
    else:
        raise ValueError("expected a duration like '2h', '30m', '7d' or seconds")
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for messages: ``timedelta(hours=26)`` -> ``1d2h``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# A duration's units as a person says them: (English singular, plural, Chinese).
_SPOKEN_UNITS = (("day", "days", "天", 86400), ("hour", "hours", "小时", 3600),
                 ("minute", "minutes", "分钟", 60), ("second", "seconds", "秒", 1))


def spoken_duration(value: timedelta, lang: str = "en") -> str:
    """A window as a person says it, for messages to the desk: ``timedelta(hours=12)`` ->
    ``12 hours`` / ``12小时``, ``timedelta(days=1, hours=12)`` -> ``1 day 12 hours`` /
    ``1天12小时``. "0.5 days" was how a window under a day read."""
    seconds = max(int(value.total_seconds()), 0)
    parts = []
    for one, many, zh, size in _SPOKEN_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{zh}" if lang == "zh" else f"{count} {one if count == 1 else many}")
    if not parts:
        return "0秒" if lang == "zh" else "0 seconds"
    return ("" if lang == "zh" else " ").join(parts)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

# -------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorityWindow(_Model):
    """How long an agency has to report in (报到) and to fix the problem."""

    acknowledge: Duration
    resolve: Duration

    @model_validator(mode="after")
    def _acknowledge_first(self) -> PriorityWindow:
        if self.acknowledge > self.resolve:
            raise ValueError(
                f"acknowledge window {format_duration(self.acknowledge)} is longer than "
                f"resolve window {format_duration(self.resolve)}")
        return self


class AgencyDef(_Model):
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    sector: Sector


class CategoryRule(_Model):
    """One kind of problem: who leads, who supports, and the words that reveal it.

    ``precedence`` exists for root-cause problems whose symptoms match other rules:
    a cracked balcony that leaks onto wiring is still the housing side's job to
    lead, even though the wet wiring makes it urgent. Higher wins the lead before
    priority is considered; the default 0 leaves the choice to priority.

    ``force: true`` is for a district that wants certainty: when one of the rule's
    keywords is found (and not denied), the rule's category is taken whatever the
    classifier says; only the desk's own category beats it. Keep the keywords of a
    forced rule specific: every report that names one goes there.
    """

    category: Slug
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    priority: Priority
    lead: str
    support: list[str] = Field(default_factory=list)
    precedence: int = 0
    force: bool = False
    keywords: list[str] = Field(min_length=1)


class Fallback(_Model):
    """Who owns a problem no rule recognises: the street office (首接负责 upstream)."""

    category: Slug
    priority: Priority
    lead: str


class Supervisor(_Model):
    """Who takes over at an escalation level (三级吹哨: community -> street -> district).

    ``language`` is the one its escalation notices are written in (zh or en).
    """

    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    language: Language = Language.zh


DEFAULT_SUPERVISORS = {
    EscalationLevel.street: Supervisor(name="街道办事处", name_en="Street office"),
    EscalationLevel.district: Supervisor(name="区政府", name_en="District government"),
}


class Merging(_Model):
    """共性问题统筹: a same-category report from the same address or grid within
    ``window`` joins the open issue instead of opening another."""

    window: Duration = timedelta(hours=48)


class RuleSet(_Model):
    version: Literal[1]
    priorities: dict[Priority, PriorityWindow]
    agencies: dict[Slug, AgencyDef]
    fallback: Fallback
    rules: list[CategoryRule]
    supervisors: dict[EscalationLevel, Supervisor] = Field(
        default_factory=lambda: dict(DEFAULT_SUPERVISORS))
    merging: Merging = Field(default_factory=Merging)

    def supervisor(self, level: EscalationLevel) -> Supervisor:
        return self.supervisors.get(level) or DEFAULT_SUPERVISORS[level]

    @cached_property
    def keywords_by_opening(self) -> dict[str, tuple[tuple[str, int, str], ...]]:
        """Every keyword as normalised text shows it (its needle), with its rule's
        index and its spelling in the file, filed under the needle's first two
        characters (a needle has two at least: ``cross_check`` refuses one of one).

        The matcher looks up only the pairs of characters a text holds, instead of
        testing every keyword of every rule (431 in the shipped file) against every
        report: a pair narrows it down to a keyword or two, where a first character
        alone (电, s) still left dozens to test. Worked out once per rule set: a
        reload builds a new one.
        """
        index: dict[str, list[tuple[str, int, str]]] = {}
        for rule_index, rule in enumerate(self.rules):
            for keyword in rule.keywords:
                found_as = needle(keyword)
                index.setdefault(found_as[:2], []).append((found_as, rule_index, keyword))
        return {opening: tuple(entries) for opening, entries in index.items()}

    @model_validator(mode="after")
    def _cross_checked(self, info: ValidationInfo) -> RuleSet:
        # parse_rules runs the cross-checks itself (on the raw data, with line
        # numbers); this catches RuleSets built from Python data directly.
        if info.context and info.context.get("cross_checked"):
            return self
        problems = cross_check(self.model_dump())
        if problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        return self

    def agency(self, agency_id: str) -> AgencyDef:
        return _looked_up(self.agencies, agency_id, "agency")

    def window(self, priority: Priority | str) -> PriorityWindow:
        return self.priorities[Priority(priority)]

    @cached_property
    def rules_by_category(self) -> dict[str, CategoryRule]:
        """Each category's rule (the first, were one listed twice), looked up for every
        match of every report; worked out once per rule set."""
        found: dict[str, CategoryRule] = {}
        for rule in self.rules:
            found.setdefault(rule.category, rule)
        return found

    def rule(self, category: str) -> CategoryRule:
        return _looked_up(self.rules_by_category, category, "category")

    def has_rule(self, category: str | None) -> bool:
        return category in self.rules_by_category

    def category_names(self) -> list[str]:
        """Every category a decision can carry: the rules' ids in file order, then the fallback's."""
        names = [rule.category for rule in self.rules]
        if self.fallback.category not in names:
            names.append(self.fallback.category)
        return names


# ------------------------------------------------------------------- cross-checks

Loc = tuple[str | int, ...]


def cross_check(data: Any) -> list[tuple[Loc, str]]:
    """References and keyword sanity, on raw (possibly malformed) data.

    Written defensively: anything of the wrong shape is skipped here because the
    structural validation already reports it.
    """
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return problems
    agencies = data.get("agencies")
    known = set(agencies) if isinstance(agencies, dict) else None

    priorities = data.get("priorities")
    if isinstance(priorities, dict):
        missing = [p.value for p in Priority if p.value not in {str(k) for k in priorities}]
        if missing:
            problems.append((("priorities",), f"missing window for {', '.join(missing)}"))

    def check_agency(loc: Loc, value: Any, what: str) -> None:
        if known is not None and isinstance(value, str) and value not in known:
            problems.append((loc, f"unknown agency {value!r} as {what}"))

    fallback = data.get("fallback")
    if isinstance(fallback, dict):
        check_agency(("fallback", "lead"), fallback.get("lead"), "fallback lead")

    rules = data.get("rules")
    if not isinstance(rules, list):
        return problems
    first_seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        category = rule.get("category")
        if isinstance(category, str):
            if category in first_seen:
                problems.append((("rules", i, "category"),
                                 f"duplicate category {category!r} (first at rules.{first_seen[category]})"))
            else:
                first_seen[category] = i
            if isinstance(fallback, dict) and category == fallback.get("category"):
                problems.append((("rules", i, "category"),
                                 f"category {category!r} is also the fallback category"))
        lead = rule.get("lead")
        check_agency(("rules", i, "lead"), lead, "lead")
        support = rule.get("support")
        if isinstance(support, list):
            seen: set[str] = set()
            for j, agency in enumerate(support):
                loc = ("rules", i, "support", j)
                check_agency(loc, agency, "support")
                if not isinstance(agency, str):
                    continue
                if agency == lead:
                    problems.append((loc, f"{agency!r} is the lead; it cannot also support"))
                elif agency in seen:
                    problems.append((loc, f"{agency!r} is listed twice"))
                seen.add(agency)
        keywords = rule.get("keywords")
        if isinstance(keywords, list):
            problems.extend(_check_keywords(("rules", i, "keywords"), keywords))
    return problems


def _check_keywords(loc: Loc, keywords: list[Any]) -> Iterator[tuple[Loc, str]]:
    seen: dict[str, int] = {}
    for j, keyword in enumerate(keywords):
        if not isinstance(keyword, str):
            continue
        norm = needle(keyword)
        if not norm:
            yield (*loc, j), "keyword is empty"
        elif len(norm) < 2:
            # A single character such as 电 would match 电梯 (lift) as a power problem.
            yield (*loc, j), f"keyword {keyword!r} is a single character; too broad to route on"
        elif norm in seen:
            yield (*loc, j), f"keyword {keyword!r} repeats keyword {seen[norm]} of this rule"
        else:
            seen[norm] = j


# ------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleProblem:
    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.path}: {self.message}"


class RulesError(Exception):
    """A rules file that cannot be used. ``str()`` lists every problem, one per line."""

    def __init__(self, problems: Iterable[RuleProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _dotted(loc: Loc) -> str:
    parts = [str(part) for part in loc if part != "[key]"]
    return ".".join(parts) or "(root)"


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """Follow ``loc`` through the composed YAML as far as it exists; 1-based line.

    A block mapping or list reached through a key is reported on the key's line
    (``priorities:``), not on its first entry, which is where YAML says it starts.
    """
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    # pydantic marks a bad mapping key with a trailing "[key]": show the key.
                    node = key if loc[i + 1:i + 2] == ("[key]",) else value
                    line = key.start_mark.line if isinstance(node, yaml.CollectionNode) \
                        else node.start_mark.line
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


_PLAIN_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown field",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected text",
}


def _message(error: dict[str, Any]) -> str:
    msg = error["msg"]
    if error["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    return _PLAIN_MESSAGES.get(error["type"], msg)


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rules file's text; raise :class:`RulesError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"{context}: {problem}" if context else problem
        raise RulesError([RuleProblem(source, line, "(yaml)", f"invalid YAML: {message}")]) from None

    if data is None:
        raise RulesError([RuleProblem(source, 1, "(root)", "the file is empty")])
    found: list[tuple[Loc, str]] = []
    ruleset: RuleSet | None = None
    try:
        ruleset = RuleSet.model_validate(data, context={"cross_checked": True})
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            found.append((tuple(error["loc"]), _message(error)))
    found.extend(cross_check(data))
    if found or ruleset is None:
        problems: list[RuleProblem] = []
        seen: set[tuple[str, str]] = set()
        for loc, message in found:
            path = _dotted(loc)
            if (path, message) in seen:
                continue
            seen.add((path, message))
            problems.append(RuleProblem(source, _line_of(root, loc), path, message))
        problems.sort(key=lambda p: (p.line or 0))
        raise RulesError(problems)
    return ruleset


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load a rules file; ``None`` loads the shipped ``rules.yaml``. OSErrors propagate."""
    file = Path(path) if path is not None else SHIPPED_RULES
    return parse_rules(file.read_text(encoding="utf-8"), source=str(file))
