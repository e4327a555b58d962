"""The reference docs say what the code does: every route, RPC method, command, option
and setting is documented, and nothing documented is gone.

Each test reads the code (the services' entrypoints, the ``whistle`` click tree,
``shared.config.DEFAULTS``) and the tables the docs already have, and names in its
failure exactly what is missing and in which file. No broker: nothing is started.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.rpc import Rpc
from nameko.web.handlers import HttpRequestHandler

from shared import config as cfg
from whistle.cli import cli
from whistle.runner import SERVICE_NAMES, service_classes

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPEN311_PREFIX = "/open311/v2/"
ALL_DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))]


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a ``#`` line), up to the next heading of its level or above."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    assert start is not None, f"heading {heading!r} not found"
    level = len(heading) - len(heading.lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"#{{1,{level}}} ", lines[i])), len(lines))
    return "\n".join(lines[start + 1:end])


def table_rows(text: str) -> list[list[str]]:
    """Every body row of every markdown table in ``text``, as its cells (``\\|`` is a
    ``|`` inside a cell, as the docs write alternatives)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"\|[\s:|-]+\|\s*$", line):
            continue
        cells = [cell.strip().replace("\\|", "|")
                 for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def table_headed(text: str, header: str) -> str:
    """The one table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"no table headed {header!r}"
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start + 1:end])


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# ----------------------------------------------------------------------------- HTTP

def shape(path: str) -> str:
    """A path with its parameters blanked: ``/issues/<issue_id>`` and ``/issues/{id}`` are
    the same route."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def entrypoints(cls: type, kind: type):
    """(attribute name, entrypoint) for every entrypoint of ``kind`` on a service class,
    its mixins' included (intake's Open311 API)."""
    for name, member in inspect.getmembers(cls):
        for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, kind):
                yield name, entrypoint


def code_routes() -> dict[tuple[str, str], str]:
    """Every (method, path shape) any service serves, with the service that serves it."""
    routes: dict[tuple[str, str], str] = {}
    for cls in service_classes(SERVICE_NAMES):
        for _, entrypoint in entrypoints(cls, HttpRequestHandler):
            for method in entrypoint.method.split(","):
                # /health is every service's: it is documented with the API's
                routes.setdefault((method, shape(entrypoint.url)), cls.name)
    return routes


ROUTE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/\S*)$")
# Open311's catch-alls answer only errors: an unknown resource (404) or a method the
# resource does not take (400 with body code 405), both in open311.md's "Errors".
OPEN311_CATCH_ALL = f"{OPEN311_PREFIX}{{}}"


def routes_of(table: str) -> set[tuple[str, str]]:
    """The routes a table names in its first column (``POST /issues``)."""
    found = set()
    for cells in table_rows(table):
        match = ROUTE.match(cells[0].strip("`"))
        if match:
            found.add((match[1], shape(match[2])))
    return found


def documented_api_routes() -> set[tuple[str, str]]:
    return routes_of(section(read("docs/http.md"), "## Every route and who may call it"))


def documented_page_routes() -> set[tuple[str, str]]:
    return routes_of(section(read("docs/pages.md"), "### Every page route"))


def documented_open311_routes() -> set[tuple[str, str]]:
    """open311.md's table of endpoints: ``GET discovery.{fmt}`` is ``GET /open311/v2/discovery.{}``;
    "``OPTIONS`` any of the above" is the preflight on every resource."""
    found = set()
    for cells in table_rows(table_headed(read("docs/open311.md"), "| endpoint |")):
        spans = code_spans(cells[0])
        if spans == ["OPTIONS"] and "any of the above" in cells[0]:
            found.add(("OPTIONS", OPEN311_CATCH_ALL))
            continue
        method, _, resource = spans[0].partition(" ")
        found.add((method, shape(OPEN311_PREFIX + resource)))
    return found


def test_every_route_is_documented_with_its_method():
    """The API's in http.md's table, the pages' in pages.md's, Open311's in open311.md's."""
    missing = []
    for (method, path), service in sorted(code_routes().items()):
        if path.startswith(OPEN311_PREFIX):
            if path == OPEN311_CATCH_ALL and method != "OPTIONS":
                continue
            where, documented = "docs/open311.md", documented_open311_routes()
        elif service == "web":
            where, documented = "docs/pages.md (### Every page route)", documented_page_routes()
        else:
            where, documented = ("docs/http.md (## Every route and who may call it)",
                                 documented_api_routes())
        if (method, path) not in documented:
            missing.append(f"{method} {path} ({service}) is not in {where}")
    assert not missing, "\n".join(missing)


def test_each_api_route_is_documented_under_its_service():
    """http.md's table says which service serves each route."""
    served = code_routes()
    table = section(read("docs/http.md"), "## Every route and who may call it")
    wrong = []
    for cells in table_rows(table):
        match = ROUTE.match(cells[0].strip("`"))
        service = match and served.get((match[1], shape(match[2])))
        if service and cells[1] not in (service, "every service"):
            wrong.append(f"docs/http.md: {cells[0]} is served by {service}, not {cells[1]}")
    assert not wrong, "\n".join(wrong)


def test_every_documented_route_exists():
    served = set(code_routes())
    gone = [f"docs/{doc}: {method} {path} is served by no service"
            for doc, documented in (("http.md", documented_api_routes()),
                                    ("pages.md", documented_page_routes()),
                                    ("open311.md", documented_open311_routes()))
            for method, path in sorted(documented) if (method, path) not in served]
    assert not gone, "\n".join(gone)


# Named in the docs as what is *not* a route: the 405 example.
NOT_ROUTES = {("PUT", "/issues")}


@pytest.mark.parametrize("source", ALL_DOCS)
def test_every_route_the_docs_name_is_served(source: str):
    """A ``GET /path`` in backticks anywhere in the docs names a route that exists (a
    trailing ``…`` stands for any route under it, as the README's ``GET /issues…``)."""
    served = set(code_routes())
    gone = []
    for span in code_spans(read(source)):
        match = re.match(r"^(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/[^\s?]*)", span)
        if not match or (match[1], match[2]) in NOT_ROUTES:
            continue
        method, path = match[1], shape(match[2].rstrip("…"))
        if match[2].endswith("…"):
            found = any(m == method and p.startswith(path) for m, p in served)
        else:
            found = (method, path) in served
        if not found:
            gone.append(f"{source}: `{span}` is served by no service")
    assert not gone, "\n".join(gone)


def test_the_open311_catch_all_is_still_there():
    """The one route the documentation check skips (it answers only errors) exists."""
    assert ("GET", OPEN311_CATCH_ALL) in code_routes()


def test_every_page_in_the_pages_table_exists():
    """pages.md's table of the pages names paths that exist."""
    served = {path for _, path in code_routes()}
    table = table_headed(read("docs/pages.md"), "| page | path |")
    gone = []
    for cells in table_rows(table):
        for span in code_spans(cells[1]):
            path = span.split("?")[0]
            if path.startswith("/") and shape(path) not in served:
                gone.append(f"docs/pages.md (## The pages and who may open them): {path} "
                            "is served by no service")
    assert not gone, "\n".join(gone)


# ------------------------------------------------------------------------------ RPC

def code_rpc_methods() -> dict[tuple[str, str], str]:
    """Every (service, method) answering RPC, with its arguments as rpc.md writes them:
    ``token, issue_id, payload=None`` (names and defaults, no annotations)."""
    found = {}
    for cls in service_classes(SERVICE_NAMES):
        for name, _ in entrypoints(cls, Rpc):
            parameters = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
            found[(cls.name, name)] = ", ".join(
                p.name if p.default is p.empty else f"{p.name}={p.default!r}".replace("'", '"')
                for p in parameters)
    return found


def documented_rpc_methods() -> dict[tuple[str, str], str]:
    """The first column of each service's table in rpc.md (``## intake``, …)."""
    text = read("docs/rpc.md")
    found = {}
    for service in SERVICE_NAMES:
        for cells in table_rows(section(text, f"## {service}")):
            match = re.fullmatch(r"`(\w+)\((.*)\)`", cells[0])
            if match:
                found[(service, match[1])] = match[2]
    return found


def test_every_rpc_method_is_documented_with_its_arguments():
    documented = documented_rpc_methods()
    problems = []
    for (service, method), arguments in sorted(code_rpc_methods().items()):
        if (service, method) not in documented:
            problems.append(f"rpc.{service}.{method} is not in docs/rpc.md (## {service})")
        elif documented[(service, method)] != arguments:
            problems.append(f"docs/rpc.md (## {service}): {method}({documented[(service, method)]})"
                            f" takes ({arguments})")
    assert not problems, "\n".join(problems)


def test_every_documented_rpc_method_exists():
    gone = sorted(set(documented_rpc_methods()) - set(code_rpc_methods()))
    assert not gone, "\n".join(f"docs/rpc.md (## {service}): {method} is no RPC method of {service}"
                               for service, method in gone)


@pytest.mark.parametrize("source", ALL_DOCS)
def test_every_rpc_method_the_docs_name_exists(source: str):
    """``rpc.routing.resident_view`` anywhere in the docs names an RPC method."""
    existing = code_rpc_methods()
    gone = [f"{source}: rpc.{service}.{method} is no RPC method"
            for service, method in sorted(set(re.findall(r"\brpc\.(\w+)\.(\w+)", read(source))))
            if (service, method) not in existing]
    assert not gone, "\n".join(gone)


# ------------------------------------------------------------------------------ CLI

def commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """(path, command) for every command that does something (not the groups)."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def argument_names(command: click.Command) -> list[str]:
    """``ISSUE_ID``: each argument as ``--help`` shows it."""
    return [param.human_readable_name for param in command.params
            if isinstance(param, click.Argument)]


def option_names(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)}


def usage_path(usage: str) -> tuple[str, ...]:
    """``whistle token [issue] AGENCY [--staff ID]`` names ``("token", "issue")``: the
    lowercase words after ``whistle``, a bracketed one being a default subcommand."""
    path = []
    for word in usage.split()[1:]:
        if word == "[options]":
            break
        word = re.sub(r"^\[([a-z][\w-]*)\]$", r"\1", word)
        if not re.fullmatch(r"[a-z][\w-]*", word):
            break
        path.append(word)
    return tuple(path)


def documented_commands() -> dict[tuple[str, ...], str]:
    """Each command of cli.md's tables whose first cell is a ``whistle …`` usage, with the
    options the row names: in its usages, and for ``[options]`` after "Options:"."""
    found: dict[tuple[str, ...], str] = {}
    for cells in table_rows(read("docs/cli.md")):
        usages = [span for span in code_spans(cells[0]) if span.startswith("whistle ")]
        for usage in usages:
            options = usage
            if "[options]" in usage:
                listed = re.search(r"Options: (.*?)\.(\s|$)", cells[-1])
                options += " " + (listed[1] if listed else "")
            found[usage_path(usage)] = found.get(usage_path(usage), "") + " " + options
    return found


def named(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_every_command_and_option_is_documented():
    documented = documented_commands()
    missing = []
    for path, command in commands():
        name = "whistle " + " ".join(path)
        if path not in documented:
            missing.append(f"{name} is not in docs/cli.md")
            continue
        missing += [f"{name} {option} is not in its row of docs/cli.md"
                    for option in sorted(option_names(command))
                    if not named(option, documented[path])]
        missing += [f"{name}'s argument {argument} is not in its row of docs/cli.md"
                    for argument in argument_names(command)
                    if not named(argument, documented[path])]
    assert not missing, "\n".join(missing)


def test_every_documented_command_and_option_exists():
    existing = dict(commands())
    gone = []
    for path, usage in sorted(documented_commands().items()):
        name = "whistle " + " ".join(path)
        if path not in existing:
            gone.append(f"docs/cli.md: {name} is no command")
            continue
        gone += [f"docs/cli.md: {name} has no option {option}"
                 for option in sorted(set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", usage)))
                 if option not in option_names(existing[path])]
    assert not gone, "\n".join(gone)


def every_command_and_group(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command_and_group(command, (*path, name))


@pytest.mark.parametrize("source", ALL_DOCS)
def test_every_command_the_docs_name_exists(source: str):
    """``whistle routing train --with-corrections`` anywhere in the docs names a command
    and its options. Words after the command (``whistle token desk``) are its arguments."""
    existing = dict(every_command_and_group())
    gone = []
    for span in code_spans(read(source)):
        named_path = path = usage_path(span) if span.startswith("whistle ") else ()
        while path and path not in existing:
            path = path[:-1]
        if named_path and not path:
            gone.append(f"{source}: `{span}` names no command")
        elif path and not isinstance(existing[path], click.Group):
            gone += [f"{source}: `{span}`: whistle {' '.join(path)} has no option {option}"
                     for option in sorted(set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", span)))
                     if option not in option_names(existing[path])]
    assert not gone, "\n".join(gone)


def test_every_command_is_of_one_kind():
    """cli.md's "What each command needs" names every command (or its group) once."""
    kinds = table_rows(section(read("docs/cli.md"), "## What each command needs"))
    named_paths = [tuple(span.split()) for cells in kinds for span in code_spans(cells[1])]
    problems = [f"docs/cli.md (## What each command needs): {' '.join(path)} is no command"
                for path in named_paths if not any(p[:len(path)] == path for p, _ in commands())]
    for path, _ in commands():
        kinds_of = [n for n in named_paths if path[:len(n)] == n]
        if len(kinds_of) != 1:
            problems.append(f"whistle {' '.join(path)} is under {len(kinds_of)} kinds in "
                            "docs/cli.md (## What each command needs), not 1")
    assert not problems, "\n".join(problems)


# -------------------------------------------------------------------- configuration

def variable(key: str) -> str:
    return "MAX_WORKERS" if key == cfg.MAX_WORKERS else key


def documented_settings() -> dict[str, str]:
    """Each variable of configuration.md's tables (``variable | default | …``), with its
    default cell; ``SMTP_USER``, ``SMTP_PASSWORD`` share one row."""
    found = {}
    for cells in table_rows(read("docs/configuration.md")):
        names = [span for span in code_spans(cells[0]) if re.fullmatch(r"[A-Z][A-Z0-9_]+", span)]
        if len(cells) == 4 and names:
            for name in names:
                found[name] = cells[1]
    return found


# Development defaults with a secret in them, or one production refuses: each must be
# labelled **dev only** where it is documented.
def dev_defaults() -> set[str]:
    return {key for key, value in cfg.DEFAULTS.items()
            if value in (cfg.DEV_SECRET, cfg.DEV_AMQP_URI, cfg.DEV_DATABASE_URL)
            or re.match(r"\w+://[^/@]+:[^/@]+@", str(value))}


def documented_default(value: object) -> str:
    """How configuration.md writes a default: the value in backticks, or, empty, "empty"
    or "unset"."""
    return "" if value == "" else f"`{value}`"


def test_every_setting_is_documented_with_its_default():
    documented = documented_settings()
    problems = []
    for key, value in cfg.DEFAULTS.items():
        name = variable(key)
        if name not in documented:
            problems.append(f"{name} is not in docs/configuration.md")
        elif value == "":
            if not re.match(r"(empty|unset)\b", documented[name]):
                problems.append(f"docs/configuration.md: {name}'s default is empty, "
                                f"not {documented[name]!r}")
        elif not documented[name].startswith(documented_default(value)):
            problems.append(f"docs/configuration.md: {name}'s default is "
                            f"{documented_default(value)}, not {documented[name]!r}")
    for key in sorted(dev_defaults()):
        if "**dev only**" not in documented.get(variable(key), ""):
            problems.append(f"docs/configuration.md: {variable(key)}'s default is a development "
                            "one and is not labelled **dev only**")
    assert not problems, "\n".join(problems)


# Read by the CLI only, not a service setting (whistle/credentials.py).
CLI_ONLY_SETTINGS = {"WHISTLE_TOKEN"}


def test_every_documented_setting_exists():
    from whistle import credentials

    assert credentials.TOKEN_ENV in CLI_ONLY_SETTINGS
    known = {variable(key) for key in cfg.DEFAULTS} | CLI_ONLY_SETTINGS
    gone = sorted(set(documented_settings()) - known)
    assert not gone, "\n".join(f"docs/configuration.md: {name} is no setting in shared/config.py"
                               for name in gone)


# ----------------------------------------------------------------------- README links

def anchors(markdown: str) -> set[str]:
    """GitHub's anchors: each heading lowercased, punctuation dropped, spaces as ``-``."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("source", ALL_DOCS)
def test_every_docs_link_resolves(source: str):
    """Every relative link (``docs/x.md``, ``x.md#anchor``, ``#anchor``, ``docs/img/…``)
    names a file that exists, and an anchor that one of its headings makes."""
    text = read(source)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"", text):
        target = next(t for t in target if t)
        if re.match(r"\w+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        path = (ROOT / source).parent / file if file else ROOT / source
        if not path.exists():
            broken.append(f"{source}: {target} names no file")
        elif anchor and anchor not in anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{source}: {target}: {file} has no heading making #{anchor}")
    assert not broken, "\n".join(broken)


# ``([security.md](security.md), "RPC: the broker is the boundary")``, ``(docs/benchmarks.md,
# "Session 19")``: a page and the title of a part of it, a heading or a bold lead.
SECTION_REFERENCE = re.compile(r'((?:docs/)?[\w-]+\.md)\)?,?\s+"([^"]+)"')


@pytest.mark.parametrize("source", ALL_DOCS)
def test_every_section_the_docs_quote_exists(source: str):
    missing = []
    for file, title in SECTION_REFERENCE.findall(read(source)):
        path = next((p for p in ((ROOT / source).parent / file, ROOT / file) if p.exists()), None)
        if path is None:
            missing.append(f"{source}: {file} (\"{title}\") names no file")
            continue
        text = " ".join(path.read_text(encoding="utf-8").split())
        title = " ".join(title.split())
        if not re.search(rf"(#+ |\*\*){re.escape(title)}", text):
            missing.append(f"{source}: {file} has no heading or bold lead \"{title}\"")
    assert not missing, "\n".join(missing)
