"""The Open311 GeoReport v2 endpoints, mixed into the intake service (thin: parse,
call the pure mapping, read or submit through intake's own path, render).

Who may call what:
- ``discovery``, ``services``, ``services/{code}``, ``tokens/{token}``: anyone.
- ``GET requests``, ``requests/{id}``, ``servicerequestupdates``: anyone, public fields
  only (``OPEN311_PUBLIC_READ=true``, the default); with ``false``, only a client with a
  key, and it sees only the requests it created.
- ``POST requests``: a client with a key, limited per key (``OPEN311_POST_LIMIT`` a
  minute). A key is good for nothing else: agency and desk endpoints take staff tokens.
- ``OPTIONS`` on any of them (a browser's CORS preflight): anyone; it carries no data,
  only the methods the resource takes.

Every answer, errors included, is Open311's shape in the format asked for; never a
stack trace or Whistle's own ``{"error": ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from logging import getLogger
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR, DependencyProvider
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.routing import Map, Rule

from services.intake.open311.catalog import Service, build_catalog
from services.intake.open311.clients import (
    POST_BUCKET,
    POST_WINDOW_S,
    READ_BUCKET,
    Open311Clients,
)
from services.intake.open311.formats import (
    FORMATS,
    Open311Error,
    preflight,
    render,
    render_error,
)
from services.intake.open311.mapping import (
    CLOSED,
    OPEN311_STATES,
    Params,
    date_window,
    json_pairs,
    json_repeats,
    language_of,
    merged_into,
    names_of,
    newest_first,
    oldest_first,
    parse_page,
    parse_request_query,
    post_response,
    read_params,
    refuse_repeats,
    request_view,
    submission_for,
    updates_from_journal,
    w3c,
)
from services.routing.rules import SHIPPED_RULES, RulesError, load_rules
from shared import config as cfg
from shared.contracts import ISSUE_ID, IssueStatus, utcnow
from shared.errors import (
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    WhistleError,
)
from shared.guard import ApiClient
from shared.issue import IssueRecord, merged_group
from shared.web import ERROR_SHAPES, http, parse_json_body, read_body_text

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
PREFIX = "/open311/v2"
# servicerequestupdates looks at the journals of issues received up to this long
# before its window starts: an issue older than that shows no more updates there.
UPDATES_LOOKBACK = timedelta(days=90)
CHUNK = 200  # records loaded per round trip while filtering a list
# FixMyStreet asks for the updates since its last poll and never pages: whatever a page
# left out it never saw, so an unpaged ask gets every update of its window, up to this
# (then a 400 asking for a shorter window or pages, never a silent cut).
MAX_UNPAGED_UPDATES = 20_000
ARCHIVE_PAGE = 1000  # archived ids read per query

_log = getLogger(__name__)


class ServiceCatalog(DependencyProvider):
    """The Open311 services, from the routing rules file (``RULES_FILE``).

    Worked out again when the file changes (one ``stat`` per request), so a rules
    reload in routing shows in the service list without restarting intake.
    """

    def setup(self):
        config = self.container.config
        self.path = cfg.get(config, cfg.RULES_FILE) or str(SHIPPED_RULES)
        self.default_community = cfg.get(config, cfg.OPEN311_DEFAULT_COMMUNITY) or None
        self._loaded: tuple[float, dict[str, Service]] | None = None
        self._categories: list[str] = []
        self._agencies: list[str] = []
        self.get()

    def get(self) -> tuple[datetime, dict[str, Service]]:
        self._refresh()
        return datetime.fromtimestamp(self._loaded[0], UTC), self._loaded[1]

    def _refresh(self) -> None:
        """Work the services out again if the rules file changed since."""
        try:
            mtime = os.stat(self.path).st_mtime
            if self._loaded is None or self._loaded[0] != mtime:
                rules = load_rules(self.path)
                catalog = build_catalog(rules, self.default_community)
                self._loaded, self._categories = (mtime, catalog), rules.category_names()
                self._agencies = sorted(rules.agencies)
        except (OSError, RulesError, ValueError) as exc:
            if self._loaded is None:
                raise  # at start-up: intake does not start on a broken rules file
            # A bad edit: keep serving the services of the last good file, as routing
            # keeps its rules in force after a failed reload.
            _log.warning("open311 services kept from the last good rules file: %s",
                         str(exc).splitlines()[0])

    def categories(self) -> list[str]:
        """Every category the rules in force know, the fallback's included: what the desk
        may name when it submits (routing would otherwise ignore a typo in silence)."""
        self._refresh()
        return self._categories

    def agencies(self) -> list[str]:
        """Every agency the rules in force know: what a list may be filtered by."""
        self._refresh()
        return self._agencies

    def get_dependency(self, worker_ctx):
        return self


class Open311Api:
    """GeoReport v2 under ``/open311/v2/``; needs the host service's ``store``,
    ``config``, ``log`` and ``_submit`` (intake's own submission path)."""

    open311_services = ServiceCatalog()

    # ------------------------------------------------------------ endpoints

    @http("GET", f"{PREFIX}/discovery.<fmt>")
    def open311_discovery(self, request, fmt):
        return self._open311(fmt, "discovery", lambda: self._discovery())

    @http("GET", f"{PREFIX}/services.<fmt>")
    def open311_services_list(self, request, fmt):
        def answer():
            lang = language_of(self._params(request).get("lang"))
            return [s.view(lang) for s in self._catalog().values()]
        return self._open311(fmt, "services", answer)

    @http("GET", f"{PREFIX}/services/<service_code>.<fmt>")
    def open311_service_definition(self, request, service_code, fmt):
        def answer():
            lang = language_of(self._params(request).get("lang"))
            return self._service(service_code).definition(lang)
        return self._open311(fmt, "service_definition", answer)

    @http("POST", f"{PREFIX}/requests.<fmt>")
    def open311_create_request(self, request, fmt):
        return self._open311(fmt, "service_requests", lambda: self._create(request))

    @http("GET", f"{PREFIX}/requests.<fmt>")
    def open311_requests(self, request, fmt):
        return self._open311(fmt, "service_requests", lambda: self._requests(request))

    @http("GET", f"{PREFIX}/requests/<service_request_id>.<fmt>")
    def open311_request(self, request, service_request_id, fmt):
        return self._open311(fmt, "service_requests",
                             lambda: self._request(request, service_request_id))

    @http("GET", f"{PREFIX}/tokens/<token>.<fmt>")
    def open311_token(self, request, token, fmt):
        def answer():
            raise Open311Error.not_found(
                "no such token: every service here is realtime, so a POST answers with "
                "its service_request_id at once and no tokens are issued")
        return self._open311(fmt, "service_requests", answer)

    @http("GET", f"{PREFIX}/servicerequestupdates.<fmt>")
    def open311_updates(self, request, fmt):
        return self._open311(fmt, "service_request_updates", lambda: self._updates(request))

    @http("GET,POST,PUT,PATCH,DELETE", f"{PREFIX}/<path:rest>")
    def open311_unknown(self, request, rest):
        """No such resource; or one that takes other methods (FixMyStreet's "send
        comments" POSTs servicerequestupdates.xml, which is read-only here): saying
        "no such resource" of it sent its operator looking for a wrong endpoint URL."""
        methods = methods_of(f"{PREFIX}/{rest}")
        if methods and rest.rsplit(".", 1)[-1] in FORMATS:
            return _wrong_method(rest, methods, request.method)
        def answer():
            raise _no_such_resource(request.method, rest)
        return self._open311(_format_of(rest), "errors", answer)

    @http("OPTIONS", f"{PREFIX}/<path:rest>")
    def open311_preflight(self, request, rest):
        """A browser's CORS preflight, for anyone: it carries no data. 204 with the
        methods this resource takes; an Open311 error for another method or resource."""
        fmt = _format_of(rest)
        methods = methods_of(f"{PREFIX}/{rest}")
        wanted = request.headers.get("Access-Control-Request-Method", "").strip().upper()
        if not methods:
            return render_error(fmt, _no_such_resource(wanted or "OPTIONS", rest))
        if rest.rsplit(".", 1)[-1] not in FORMATS:
            return render_error(fmt, Open311Error.not_found(
                f"format {rest.rsplit('.', 1)[-1][:20]!r} is not served: use .json or .xml"))
        if wanted and wanted not in methods:
            return _wrong_method(rest, methods, wanted)
        return preflight(methods)

    # -------------------------------------------------------------- reading

    def _discovery(self) -> dict[str, Any]:
        changed, _ = self.open311_services.get()
        changeset = w3c(changed, self._tz())
        base = str(cfg.get(self.config, cfg.PUBLIC_URL)).rstrip("/")
        return {
            "changeset": changeset,
            "contact": f"The community desk runs this endpoint: {base}",
            "key_service": "API keys for posting are issued per client by the operators "
                           "(whistle open311 key add NAME)",
            # With its trailing slash, as docs/open311.md tells FixMyStreet's operators
            # to enter it: FixMyStreet appends services.xml, requests.xml... to the URL
            # as it is, and without the slash asked for .../v2requests.xml (404).
            "endpoints": [{"specification": SPECIFICATION, "url": f"{base}{PREFIX}/",
                           "changeset": changeset, "type": "production",
                           "formats": ["text/xml", "application/json"]}],
        }

    def _requests(self, request) -> list[dict[str, Any]]:
        self._admit_read(request)
        params = self._params(request)
        lang = language_of(params.get("lang"))
        reader = self._reader(params)
        catalog = self._catalog()
        query = parse_request_query(params, catalog, utcnow())
        clients = self._clients()
        if query.ids is not None:
            ids = list(dict.fromkeys(i for i in query.ids if ISSUE_ID.fullmatch(i)))
            if reader is not None:
                ids = clients.owned(reader, ids)
        elif reader is not None:
            ids = clients.requests_between(reader, query.start, query.end)
        else:
            ids, archived = self._ids_received(query.start, query.end)
            if query.statuses is not None:  # a client's own list is small: no shortcut
                ids = self._with_status(ids, query.statuses, archived)
        first = (query.page - 1) * query.page_size
        if query.service_codes is None and query.statuses is None:
            # Nothing to filter on the records: the page needs exactly its own.
            return self._views(ids[first:first + query.page_size], lang)
        matched: list[dict[str, Any]] = []
        seen = 0
        for n in range(0, len(ids), CHUNK):
            for view in self._views(ids[n:n + CHUNK], lang):
                if not query.matches(view):
                    continue
                if seen >= first:
                    matched.append(view)
                seen += 1
                if len(matched) == query.page_size:
                    return matched
        return matched

    def _ids_received(self, start: datetime, end: datetime) -> tuple[list[str], set[str]]:
        """Every issue received in ``[start, end]``, newest first: those in Redis and,
        where the store has an archive of finished issues (``store.archive``, PostgreSQL),
        the archived ones, so a closed issue stays in the list after it moves there.
        Also the ids found only in the archive (all closed: only those are archived)."""
        hot = self.store._call(self.store.redis.zrangebyscore, self.store.keys.all_issues,
                               start.timestamp(), end.timestamp(), withscores=True)
        archive = getattr(self.store, "archive", None)
        cold = archived_received(archive, start, end) if archive is not None else []
        return newest_first(hot, cold), {i for i, _ in cold} - {i for i, _ in hot}

    def _journals(self, issue_ids: list[str], since: datetime) -> dict[str, list[dict]]:
        """The issues' journals: Redis's, and the archive's for archived issues that
        changed at or after ``since`` (the others have nothing to show from then on)."""
        journals = dict(zip(issue_ids, self.store.journals(issue_ids), strict=True))
        empty = [i for i, journal in journals.items() if not journal]
        if empty and getattr(self.store, "archive", None) is not None:
            for record in self.store.get_many(empty):  # the archive's, in one query
                if record.updated_at >= since:
                    journals[record.issue_id] = self.store.journal(record.issue_id)
        return journals

    def _joined_journals(self, issue_ids: list[str]) -> dict[str, list[dict]]:
        """The whole journals of the issues merged reports joined (their steps are the
        reports' updates too): Redis's, and the archive's for an issue that has left it
        (archived with its reports, so the reports' updates stay the same once they move)."""
        journals = dict(zip(issue_ids, self.store.journals(issue_ids), strict=True))
        if getattr(self.store, "archive", None) is not None:
            for issue_id in [i for i, journal in journals.items() if not journal]:
                journals[issue_id] = self.store.journal(issue_id)
        return journals

    def _with_status(self, ids: list[str], statuses: set[str], archived: set[str]
                     ) -> list[str]:
        """Only the ids whose Whistle status can show as one of ``statuses`` (the status
        indexes, one round trip); merged reports show their issue's, so they stay, and
        archived ones are closed."""
        states = {IssueStatus.merged.value}
        for status in statuses:
            states |= {s.value for s in OPEN311_STATES[status]}
        pipe = self.store.redis.pipeline(transaction=False)
        for state in sorted(states):
            pipe.smembers(self.store.keys.by_status(state))
        allowed = set().union(*self.store._call(pipe.execute))
        if CLOSED in statuses:
            allowed |= archived
        return [i for i in ids if i in allowed]

    def _request(self, request, service_request_id: str) -> list[dict[str, Any]]:
        self._admit_read(request)
        params = self._params(request)
        lang = language_of(params.get("lang"))
        reader = self._reader(params)
        missing = Open311Error.not_found(f"no service request {service_request_id[:40]}")
        if not ISSUE_ID.fullmatch(service_request_id):
            raise missing
        if reader is not None and not self._clients().owns(reader, service_request_id):
            raise missing  # another client's request: as if it did not exist
        views = self._views([service_request_id], lang)
        if not views:
            raise missing
        return views

    def _views(self, ids: list[str], lang) -> list[dict[str, Any]]:
        records = self.store.get_many(ids)
        parents = self._parents(records)
        names = self._names(ids, records, parents)
        catalog, tz = self._catalog(), self._tz()
        return [request_view(r, catalog, lang, tz, names[r.issue_id],
                             parents.get(r.merged_into) if r.merged_into else None)
                for r in records]

    def _parents(self, records: list[IssueRecord]) -> dict[str, IssueRecord]:
        """The open issues these reports were merged into, by id."""
        return {r.issue_id: r for r in self.store.get_many(
            sorted({r.merged_into for r in records if r.merged_into}))}

    def _names(self, ids: list[str], records: list[IssueRecord],
               parents: dict[str, IssueRecord]) -> dict[str, frozenset[str]]:
        """The names to mask in each request's text: its reporter's and every other
        reporter's of its merged group (the open issue's and each report folded into
        it). The group shares its agencies' notes, and a note naming one reporter was
        shown unmasked on the others' requests."""
        groups = {i: {i} for i in ids}
        for r in records:
            groups[r.issue_id] = merged_group(r, parents.get(r.merged_into or ""))
        contacts = self._contacts(sorted(set().union(*groups.values())))
        return {i: frozenset().union(*(names_of(contacts.get(m, {})) for m in group))
                for i, group in groups.items()}

    def _updates(self, request) -> list[dict[str, Any]]:
        self._admit_read(request)
        params = self._params(request)
        lang = language_of(params.get("lang"))
        reader = self._reader(params)
        start, end = date_window(params, utcnow())
        page, page_size = parse_page(params)
        archive = getattr(self.store, "archive", None)
        if reader is not None:
            ids = list(reversed(self._clients().requests_between(
                reader, start - UPDATES_LOOKBACK, end)))
        else:
            ids = self.store.issue_ids_received(start - UPDATES_LOOKBACK, end)
            if archive is not None:
                # Archived issues changed in the window (a wide one) have updates in it.
                hot = set(ids)
                ids += [i for i, _ in reversed(archived_received(
                    archive, start - UPDATES_LOOKBACK, end, updated_since=start))
                    if i not in hot]
        tz = self._tz()
        updates: list[dict[str, Any]] = []
        for n in range(0, len(ids), CHUNK):
            updates += self._chunk_updates(ids[n:n + CHUNK], lang, tz, start, end)
        updates = oldest_first(updates)
        if params.get("page") is None and params.get("page_size") is None:
            if len(updates) > MAX_UNPAGED_UPDATES:
                raise Open311Error.bad_request(
                    f"{len(updates)} updates in this window, more than "
                    f"{MAX_UNPAGED_UPDATES} at once: ask for a shorter window, or page "
                    "through them with page and page_size")
            return updates
        first = (page - 1) * page_size
        return updates[first:first + page_size]

    def _chunk_updates(self, chunk: list[str], lang, tz: ZoneInfo, start: datetime,
                       end: datetime) -> list[dict[str, Any]]:
        journals = self._journals(chunk, start)
        parents = {i: merged_into(j) for i, j in journals.items() if merged_into(j)}
        wanted = sorted(set(parents.values()))
        joined = self._joined_journals(wanted)

        def steps(issue_id: str, names: frozenset[str] = frozenset()) -> list[dict]:
            return updates_from_journal(issue_id, journals[issue_id], lang, tz, start, end,
                                        names, joined.get(parents.get(issue_id), []))

        # The names to mask are read only for issues with a step in the window (the
        # first pass masks nothing and is never shown), so a short poll reads few.
        shown = [i for i in journals if steps(i)]
        records = self.store.get_many(shown)
        names = self._names(shown, records, self._parents(records))
        return [update for issue_id in shown for update in steps(issue_id, names[issue_id])]

    # ------------------------------------------------------------- posting

    def _create(self, request) -> tuple[list[dict[str, Any]], int]:
        params = self._post_params(request)
        clients = self._clients()
        api_key = params.get("api_key")
        if api_key is None:
            raise Open311Error.forbidden("api_key is missing: posting needs a key")
        client = clients.client_for(api_key)
        if client is None:
            raise Open311Error.forbidden("api_key is invalid or revoked")
        self.guard.record(ApiClient(client), "open311.request.create")
        allowed, wait = clients.within_limit(
            POST_BUCKET, client, int(cfg.get(self.config, cfg.OPEN311_POST_LIMIT)),
            POST_WINDOW_S)
        if not allowed:
            raise Open311Error(400, (429, f"too many requests from this api_key; try again "
                                          f"in {wait} s"), retry_after=wait)
        service, submission = submission_for(params, self._catalog(),
                                             self.open311_services.default_community)
        lang = submission.language
        receipt = self._submit(submission)  # audited with the write
        issue_id = receipt["issue_id"]
        clients.record_request(client, issue_id, datetime.fromisoformat(receipt["received_at"]))
        self.log.info("open311_request_created", issue_id=issue_id, client=client,
                      service_code=service.code)
        return post_response(issue_id, service, service.notice(issue_id, lang)), 201

    # ------------------------------------------------------------- helpers

    def _open311(self, fmt: str, root: str, produce: Callable[[], Any]):
        if fmt not in FORMATS:
            return render_error("xml", Open311Error.not_found(
                f"format {fmt[:20]!r} is not served: use .json or .xml"))
        try:
            result = produce()
            payload, status = result if isinstance(result, tuple) else (result, 200)
            return render(fmt, root, payload, status)
        except Open311Error as exc:
            return render_error(fmt, exc)
        except NotFound as exc:
            return render_error(fmt, Open311Error.not_found(exc.message))
        except (Forbidden, Unauthorized) as exc:
            return render_error(fmt, Open311Error.forbidden(exc.message))
        except PayloadTooLarge as exc:
            return render_error(fmt, Open311Error.too_large(exc.message))
        except Unavailable:
            return render_error(fmt, Open311Error(
                400, (503, "Whistle's store is unavailable; try again shortly"), retry_after=5))
        except WhistleError as exc:
            return render_error(fmt, Open311Error.bad_request(exc.message))
        except HTTPException as exc:  # werkzeug's own refusals, e.g. a malformed multipart form
            return render_error(fmt, Open311Error(400, (exc.code or 400, str(exc.description))))
        except Exception as exc:  # never a stack trace to the client; it goes to the log
            self.log.error("open311_failed", error=type(exc).__name__, exc_info=exc)
            return render_error(fmt, Open311Error(400, (500, "internal error")))

    def _catalog(self) -> dict[str, Service]:
        return self.open311_services.get()[1]

    def _service(self, code: str) -> Service:
        service = self._catalog().get(code)
        if service is None:
            raise Open311Error.not_found(f"no service {code[:40]!r} (see services.xml)")
        return service

    def _clients(self) -> Open311Clients:
        return Open311Clients(self.store.redis, self.store.keys.prefix)

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(cfg.get(self.config, cfg.DISPLAY_TZ))

    def _admit_read(self, request) -> None:
        """Reads of requests and updates are limited per client address, as the desk's
        reads are (``WHISTLE_RATE_READ`` a ``WHISTLE_RATE_WINDOW_S``)."""
        allowed, wait = self._clients().within_limit(
            READ_BUCKET, request.remote_addr or "-", int(cfg.get(self.config, cfg.RATE_READ)),
            int(cfg.get(self.config, cfg.RATE_WINDOW_S)))
        if not allowed:
            raise Open311Error(400, (429, f"too many requests; try again in {wait} s"),
                               retry_after=wait)

    def _reader(self, params: Params) -> str | None:
        """None when reads are public; else the client the key names (403 without one)."""
        if str(cfg.get(self.config, cfg.OPEN311_PUBLIC_READ)).strip().lower() not in (
                "false", "0", "no", "off"):
            return None
        api_key = params.get("api_key")
        if api_key is None:
            raise Open311Error.forbidden("api_key is missing: this endpoint's reads need a key")
        client = self._clients().client_for(api_key)
        if client is None:
            raise Open311Error.forbidden("api_key is invalid or revoked")
        return client

    def _contacts(self, issue_ids: list[str]) -> dict[str, dict[str, str]]:
        """Reporters' contacts, only to mask their names in free text; never shown."""
        return self.store.contacts(issue_ids)  # archived issues' too

    @staticmethod
    def _params(request) -> Params:
        """A GET's parameters; one Whistle reads given twice over is a 400 naming it."""
        return refuse_repeats(read_params(_query_pairs(request)))

    @staticmethod
    def _post_params(request) -> Params:
        """The posted fields; a body over the limit (declared or chunked) is
        PayloadTooLarge, a malformed JSON one MalformedBody (``_open311`` answers both)."""
        mimetype = request.mimetype
        problems: dict[str, str] = {}
        if mimetype == "multipart/form-data":
            pairs = list(request.form.items(multi=True))
        else:
            try:
                text = read_body_text(request)
            except UnicodeDecodeError:
                raise Open311Error.bad_request("body is not valid UTF-8") from None
            if mimetype == "application/json":
                pairs, problems = json_pairs(parse_json_body(text, repeats_allowed=True))
                problems = {**json_repeats(text), **problems}
            elif mimetype in ("application/x-www-form-urlencoded", ""):
                pairs = _form_pairs(text)
            else:
                raise Open311Error.bad_request(
                    "Content-Type must be application/x-www-form-urlencoded; charset=utf-8 "
                    "(or application/json)")
        return read_params([*pairs, *_query_pairs(request)], problems)


def archived_received(archive, start: datetime, end: datetime, page: int = ARCHIVE_PAGE,
                      updated_since: datetime | None = None) -> list[tuple[str, float]]:
    """``(issue id, received epoch s)`` of the archived issues received in ``[start, end]``
    (and last changed at or after ``updated_since``, if given), newest first, through the
    archive's keyset-paginated ``summaries``."""
    found: list[tuple[str, float]] = []
    before = (end, "WH-99999999-99999999")  # strictly before it: everything up to ``end``
    while True:
        rows = archive.summaries(None, None, None, before, page)
        found += [(r["issue_id"], r["received_at"].timestamp()) for r in rows
                  if r["received_at"] >= start
                  and (updated_since is None or r["updated_at"] >= updated_since)]
        if len(rows) < page or rows[-1]["received_at"] < start:
            return found
        before = (rows[-1]["received_at"], rows[-1]["issue_id"])


def _refused(environ, exc: Exception):
    """A refusal before any handler ran (a body over the limit, a method no route here
    takes at all: TRACE, a made-up one), in Open311's shape."""
    path = environ.get("PATH_INFO") or ""
    if isinstance(exc, (NoRoute, MethodNotAllowed)) and not path.startswith(f"{PREFIX}/"):
        # ``…/v2requests.xml``: FixMyStreet appends the resource to the endpoint URL as it
        # is, so an endpoint given without its slash lands here, on no route at all.
        return render_error(_format_of(path), Open311Error.not_found(
            f"no such resource: {environ.get('REQUEST_METHOD', '')[:20]} {path[:100]}: the "
            f"endpoint URL ends in {PREFIX}/, with its trailing slash"))
    if isinstance(exc, NoRoute):  # the endpoint URL itself, which the catch-all misses
        return render_error(_format_of(path), _no_such_resource(
            environ.get("REQUEST_METHOD", ""), path.removeprefix(f"{PREFIX}/")))
    if isinstance(exc, MethodNotAllowed):
        # Answered as the catch-all answers a method its resource does not take, Allow
        # naming what this resource takes (werkzeug's would name the catch-all's too).
        rest, method = path.removeprefix(f"{PREFIX}/"), environ.get("REQUEST_METHOD", "")
        methods = methods_of(path)
        if methods and rest.rsplit(".", 1)[-1] in FORMATS:
            return _wrong_method(rest, methods, method)
        return render_error(_format_of(rest), _no_such_resource(method, rest))
    fmt = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else "xml"
    status = getattr(exc, "status", None) or getattr(exc, "code", None) or 400
    description = getattr(exc, "message", None) or getattr(exc, "description", None) or "refused"
    error = Open311Error(404 if status == 404 else 400, (status, str(description)))
    return render_error(fmt if fmt in FORMATS else "xml", error)


ERROR_SHAPES[PREFIX] = _refused  # ``/open311/v2`` and what a missing slash runs into


def _format_of(rest: str) -> str:
    fmt = rest.rsplit(".", 1)[-1] if "." in rest else "xml"
    return fmt if fmt in FORMATS else "xml"


def _wrong_method(rest: str, methods: list[str], method: str):
    """HTTP 400 (the spec's status for all but 403 and 404), body code 405, and Allow."""
    response = render_error(_format_of(rest), Open311Error(400, (405, (
        f"{PREFIX}/{rest[:100]} takes {', '.join(methods)}, not {method[:20]}"))))
    response.headers["Allow"] = ", ".join(methods)
    return response


def _no_such_resource(method: str, rest: str) -> Open311Error:
    return Open311Error.not_found(
        f"no such resource: {method[:20]} {PREFIX}/{rest[:100]} (resources end in .json "
        "or .xml: discovery, services, services/{code}, requests, requests/{id}, "
        "tokens/{token}, servicerequestupdates)")


@cache
def _routes() -> tuple[Map, dict[str, tuple[str, ...]]]:
    """Open311's own routes, read from the entrypoints above (so a preflight names
    exactly what a route takes): the map, and each rule's declared methods."""
    declared: dict[str, list[str]] = {}
    for member in vars(Open311Api).values():
        for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if "<path:rest>" not in entrypoint.url:  # not the catch-alls
                declared.setdefault(entrypoint.url, []).extend(entrypoint.method.split(","))
    rules = Map([Rule(url, methods=methods, endpoint=url) for url, methods in declared.items()])
    return rules, {url: tuple(methods) for url, methods in declared.items()}


def methods_of(path: str) -> list[str]:
    """The methods an Open311 path takes, in a fixed order; none for no such resource."""
    rules, declared = _routes()
    adapter = rules.bind("open311")
    found: set[str] = set()
    for url, methods in declared.items():
        for method in methods:
            try:
                if adapter.match(path, method=method)[0] == url:
                    found.add(method)
            except HTTPException:
                pass
    return sorted(found)


def _form_pairs(text: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Open311Error.bad_request("parameters are not valid UTF-8") from None


def _query_pairs(request) -> list[tuple[str, str]]:
    try:
        return _form_pairs(request.query_string.decode("utf-8"))
    except UnicodeDecodeError:
        raise Open311Error.bad_request("the query string is not valid UTF-8") from None

