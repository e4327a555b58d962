"""What residents and supervisors are told at each step (事事有落实、件件有回应). Pure: no I/O after load.

Templates live in ``templates/<language>.yaml``, one ``str.format``-style message per
kind in :data:`MESSAGE_KINDS`, plus a ``_meta`` section with the list joiner
(``、`` in Chinese, ``", "`` in English) and the email ``subjects`` (per kind, with a
``default``; ``{issue_id}`` is their only placeholder). Everything is checked when the files are
loaded, so a broken or incomplete translation stops the service at start-up
instead of sending a resident a half-filled message at 2 a.m.

Usage::

    templates = Templates.load()
    text = templates.render("dispatched", "zh", issue_id="WH-20250105-0001",
                            agencies=["供电公司", "区房管局"], lead_agency="供电公司",
                            acknowledge_by=assignment.acknowledge_by)
    subject = templates.subject("dispatched", "zh", issue_id="WH-20250105-0001")
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

MESSAGE_KINDS: tuple[str, ...] = (
    "received", "merged", "dispatched", "acknowledged", "escalated", "escalation_notice",
    "table_convened", "table_decision", "part_resolved", "resolved", "rating_request",
    "reopened", "closed", "rerouted", "dispatched_one", "rerouted_one",
    "received_desk", "rating_request_desk", "escalation_reminder",
    "reopen_notice", "reopen_reminder", "escalated_part",
)
"""Every message kind, in the order they usually arrive. All are for residents except
``escalation_notice``, which goes to the supervisor an issue was escalated to, and
``reopen_notice``, to the supervisor at the level an unsatisfied rating reopened it at
(民事民评); ``escalation_reminder`` and ``reopen_reminder`` are their wording when the
issue stays with the district (nothing went up: the district is reminded).
``escalated_part`` is the wording of "escalated" when an agency's own misses whistle it
to a level below the one another agency's took the issue to (the street office presses
it, the issue stays with the district): "escalated to the street office" read as if the
issue went down.
``dispatched_one`` and ``rerouted_one`` are the wording of "dispatched" and "rerouted"
when one agency has the whole issue (its record's kind stays "dispatched" or
"rerouted"): "sent to the power company, with the power company leading; each agency
must report in" misread a one-agency issue. ``received_desk`` and
``rating_request_desk`` are the desk's copy of the two messages that carry a link, for
the desk to say to a resident it calls or visits (a link is useless read aloud): the
rating request asks whether they are satisfied, for the desk to record the answer."""

DESK_WORDING: dict[str, str] = {"received": "received_desk",
                                "rating_request": "rating_request_desk"}
"""The kinds whose desk copy (what the desk relays) has a wording of its own."""

DEFAULT_LANGUAGE = "zh"
"""Residents write in Chinese; anything we have no template for falls back to it."""

DEFAULT_DIRECTORY = Path(__file__).with_name("templates")
META_KEY = "_meta"
DEFAULT_SUBJECT_KEY = "default"
FALLBACK_SUBJECT = "[Whistle] {issue_id}"
SUBJECT_VARIABLES = frozenset({"issue_id"})
DATETIME_FORMAT = "%Y-%m-%d %H:%M"

_FORMATTER = string.Formatter()


class TemplateError(Exception):
    """A template file is invalid, or a message cannot be rendered completely."""


class Templates:
    """Validated message templates for every language, ready to render.

    ``messages`` maps language -> kind -> template; ``joiners`` maps language -> the
    separator used when a variable is a list; ``subjects`` maps language -> kind (or
    ``"default"``) -> email subject. Prefer :meth:`load`, which reads and validates
    the shipped files.
    """

    def __init__(self, messages: Mapping[str, Mapping[str, str]],
                 joiners: Mapping[str, str], tz: str = "Asia/Shanghai",
                 subjects: Mapping[str, Mapping[str, str]] | None = None):
        try:
            self._tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"unknown display timezone {tz!r}") from None
        self._messages = {lang: dict(kinds) for lang, kinds in messages.items()}
        self._joiners = dict(joiners)
        self._subjects = {lang: dict(kinds) for lang, kinds in (subjects or {}).items()}
        self._variables = {
            lang: {kind: _placeholders(text, f"{lang}.yaml", kind) for kind, text in kinds.items()}
            for lang, kinds in self._messages.items()
        }
        self._validate()

    @classmethod
    def load(cls, directory: Path | None = None, tz: str = "Asia/Shanghai") -> Templates:
        """Read every ``*.yaml`` in ``directory`` (default: the shipped templates)."""
        directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise TemplateError(f"no template files (*.yaml) in {directory}")
        messages: dict[str, dict[str, str]] = {}
        joiners: dict[str, str] = {}
        subjects: dict[str, dict[str, str]] = {}
        for path in files:
            language = path.stem
            messages[language], meta = _read_file(path)
            joiners[language] = meta["joiner"]
            subjects[language] = meta.get("subjects") or {}
        return cls(messages, joiners, tz=tz, subjects=subjects)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self._messages))

    def render(self, kind: str, language: str, **variables: Any) -> str:
        """The complete message, or :class:`TemplateError`: never a half-filled one.

        Extra variables are ignored, so a caller may pass one superset for every
        kind. ``None``, empty strings and empty lists count as missing. Lists are
        joined with the language's joiner; datetimes are shown in the display
        timezone as ``YYYY-MM-DD HH:MM`` (naive datetimes are taken as UTC, the
        timezone everything in Whistle is stored in).
        """
        language = self._language(language)
        template = self._template(kind, language)
        required = self._variables[language][kind]
        missing = [name for name in required if _is_blank(variables.get(name))]
        if missing:
            raise TemplateError(f"cannot render {kind!r} ({language}): missing variable(s) "
                                f"{', '.join(sorted(missing))}")
        values = {name: self._display(variables[name], language) for name in required}
        return template.format_map(values)

    def subject(self, kind: str, language: str, **variables: Any) -> str:
        """The email subject for ``kind``: the language's own, else its default."""
        language = self._language(language)
        self._template(kind, language)
        subjects = self._subjects.get(language, {})
        template = subjects.get(kind) or subjects.get(DEFAULT_SUBJECT_KEY) or FALLBACK_SUBJECT
        if _is_blank(variables.get("issue_id")):
            raise TemplateError(f"cannot render the subject of {kind!r}: missing issue_id")
        return template.format_map({"issue_id": str(variables["issue_id"])})

    def required_variables(self, kind: str, language: str) -> set[str]:
        """The placeholder names ``kind`` uses in ``language`` (after the zh fallback)."""
        language = self._language(language)
        self._template(kind, language)
        return set(self._variables[language][kind])

    # ----------------------------------------------------------------- internals

    def _language(self, language: str | None) -> str:
        language = str(language) if language is not None else DEFAULT_LANGUAGE
        return language if language in self._messages else DEFAULT_LANGUAGE

    def _template(self, kind: str, language: str) -> str:
        try:
            return self._messages[language][kind]
        except KeyError:
            raise TemplateError(
                f"unknown message kind {kind!r}; expected one of {', '.join(MESSAGE_KINDS)}"
            ) from None

    def _display(self, value: Any, language: str) -> str:
        if type(value) is str:  # most values: str() would give it back as it is
            return value
        if isinstance(value, list | tuple):
            return self._joiners[language].join(self._display(v, language) for v in value)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.astimezone(self._tz).strftime(DATETIME_FORMAT)
        return str(value)

    def _validate(self) -> None:
        if DEFAULT_LANGUAGE not in self._messages:
            raise TemplateError(
                f"missing {DEFAULT_LANGUAGE}.yaml: it is the fallback for every other language"
            )
        for language, kinds in self._messages.items():
            source = f"{language}.yaml"
            for kind in MESSAGE_KINDS:
                if kind not in kinds:
                    raise TemplateError(f"{source}: missing template for kind {kind!r}")
            unknown = sorted(set(kinds) - set(MESSAGE_KINDS))
            if unknown:
                raise TemplateError(f"{source}: unknown kind {unknown[0]!r}; "
                                    f"expected only {', '.join(MESSAGE_KINDS)}")
            if not isinstance(self._joiners.get(language), str):
                raise TemplateError(f"{source}: {META_KEY}.joiner must be a string")
            self._validate_subjects(language, source)
        # A translation that asks for a variable the other languages do not use
        # would fail only for residents of that language: refuse it up front.
        reference = self._variables[DEFAULT_LANGUAGE]
        for language, kinds in self._variables.items():
            for kind in MESSAGE_KINDS:
                if kinds[kind] != reference[kind]:
                    raise TemplateError(
                        f"{language}.yaml: kind {kind!r} uses {sorted(kinds[kind])}, but "
                        f"{DEFAULT_LANGUAGE}.yaml uses {sorted(reference[kind])}"
                    )


    def _validate_subjects(self, language: str, source: str) -> None:
        subjects = self._subjects.get(language, {})
        if not isinstance(subjects, dict):
            raise TemplateError(f"{source}: {META_KEY}.subjects must map kinds to subjects")
        for kind, text in subjects.items():
            where = f"{META_KEY}.subjects.{kind}"
            if kind != DEFAULT_SUBJECT_KEY and kind not in MESSAGE_KINDS:
                raise TemplateError(f"{source}: {where}: unknown kind {kind!r}")
            if not isinstance(text, str) or not text.strip():
                raise TemplateError(f"{source}: {where} must be non-empty text")
            extra = _placeholders(text, source, where) - SUBJECT_VARIABLES
            if extra:
                raise TemplateError(f"{source}: {where} may use only {{issue_id}}, "
                                    f"not {{{sorted(extra)[0]}}}")


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path.name}: cannot read templates ({exc})") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path.name}: expected a mapping of kind -> template")
    meta = data.pop(META_KEY, None)
    if not isinstance(meta, dict) or "joiner" not in meta:
        raise TemplateError(f"{path.name}: missing {META_KEY}.joiner (the list separator)")
    for kind, text in data.items():
        if not isinstance(text, str) or not text.strip():
            raise TemplateError(f"{path.name}: template for kind {kind!r} must be non-empty text")
    return data, meta


def _placeholders(text: str, source: str, kind: str) -> frozenset[str]:
    """Plain ``{name}`` placeholders only: no ``{0}``, ``{a.b}``, ``{a[0]}``, ``!r`` or ``:spec``.

    Attribute and index lookups would let a template reach into whatever object a
    caller passes; conversions and specs would bypass the list/datetime display rules.
    """
    if not isinstance(text, str):
        raise TemplateError(f"{source}: template for kind {kind!r} must be text")
    names = set()
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateError(f"{source}: kind {kind!r} is not a valid template ({exc})") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"{source}: kind {kind!r} has placeholder {{{name}}} with a lookup, conversion "
                "or format spec; use a plain {name}"
            )
        names.add(name)
    return frozenset(names)


def _is_blank(value: Any) -> bool:
    """``None``, ``""``, ``"  "`` and lists of nothing but those would leave a gap in the text."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple):
        return all(_is_blank(v) for v in value)
    return False
