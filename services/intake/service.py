"""intake: the community desk's door (居民点单 -> 社区接单).

Accepts a problem over HTTP or RPC, validates it, gives it a stable reference
(``WH-yyyymmdd-nnnn``), stores it with its announcing ``issue.received`` event
in one Redis transaction, then publishes. It also serves the desk's read side:
one issue with its timeline, filtered lists, and the three rates (三率) computed
from the journal (``services.intake.stats``).
"""

from __future__ import annotations

from typing import TypeVar

from nameko.dependency_providers import Config
from nameko.timer import timer
from pydantic_core import to_jsonable_python

from services.intake.archiver import ArchiverProvider
from services.intake.domain import OPEN_STATUSES, accept_issue, board_row
from services.intake.hot_facts import hot_facts_for
from services.intake.open311 import api as open311_api
from services.intake.stats import StatsScope, StatsWindow
from services.intake.upgrades import KeyUpgrades
from shared import config as cfg
from shared.archive_stats import stats_over_facts
from shared.authz import (
    View,
    issue_view,
    load_judged,
    may_list_issues,
    may_read_events,
    may_read_issue,
    may_read_stats,
    may_submit,
    may_submit_in,
    visible_in_list,
)
from shared.contracts import BoardFilter, IssueFilter, SubmitIssue, new_id, utcnow, view_language
from shared.errors import EXPECTED_ERRORS, Forbidden, Unavailable, unknown_value
from shared.guard import SUBMIT, Guard
from shared.issue import public_view
from shared.jsoncodec import utc_moment
from shared.logging import WorkerLogger
from shared.messaging import EventBus
from shared.rpc import rpc
from shared.store import Store, day_of
from shared.web import (
    health_report,
    http,
    json_response,
    query_flags,
    query_parameters,
    read_json,
    validate,
)

# Ids tried for one submission before giving up (the first collision resyncs the
# day's counter, so a second try normally succeeds).
MAX_ID_TRIES = 3
# How often the archiver's timer looks at the clock; a pass runs every
# WHISTLE_ARCHIVE_INTERVAL_S (services.intake.archiver).
ARCHIVE_TICK_S = 1.0
# How often a key migration that found Redis out of reach at start-up is tried again.
UPGRADE_RETRY_S = 5.0
F = TypeVar("F", IssueFilter, BoardFilter)


# The Open311 mixin by its module: `nameko run services.intake.service` (docker compose)
# takes every class with entrypoints that the module holds as a service, and refused
# to start on the nameless mixin.
class IntakeService(open311_api.Open311Api):
    name = "intake"

    store = Store()
    bus = EventBus()
    log = WorkerLogger()
    config = Config()
    guard = Guard()
    # Intake archives: it owns the issue's record from the first report, and serves the
    # reads that fall back to the archive. Every intake instance runs passes; leases
    # keep them apart (docs/archive.md).
    archiver = ArchiverProvider()
    # An earlier release's community index moved to folded names, before intake serves.
    upgrades = KeyUpgrades()

    # ------------------------------------------------------------------ RPC
    # RPC callers hold the broker's credentials and are trusted with the desk's view
    # (docs/security.md: the broker is the boundary); HTTP callers are not.

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def submit_issue(self, payload: dict) -> dict:
        """Accept a problem; returns its reference. See ``SubmitIssue`` for the fields."""
        return self._submit(validate(SubmitIssue, payload))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_issue(self, issue_id: str) -> dict:
        return public_view(self.store.get_with_notes(issue_id), self.store.contact(issue_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_issues(self, filters: dict | None = None) -> list[dict]:
        return self.list_page(filters)["issues"]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_page(self, filters: dict | None = None) -> dict:
        """Newest first, hot and archived alike; pass ``next_cursor`` back as ``cursor``."""
        query = self._known_filters(validate(IssueFilter, filters or {}))
        issues, cursor = self.store.page([query], query.limit)
        return {"issues": issues, "next_cursor": cursor}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_events(self, issue_id: str) -> list[dict]:
        """The issue's journal: every event, in the order it was committed."""
        self.store.get(issue_id)
        return self.store.journal(issue_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def stats(self, window: dict | None = None, communities: list[str] | None = None) -> dict:
        """The three rates (三率) over ``{"since", "until"}`` (ISO; default the last 30 days);
        ``communities``: only theirs (a desk scoped to them, ``shared.authz.may_read_stats``)."""
        scope = (None if communities is None
                 else validate(StatsScope, {"communities": communities}).communities)
        return self._stats(window, None if scope is None else frozenset(scope))

    def _stats(self, window: dict | None, communities: frozenset[str] | None) -> dict:
        bounds = validate(StatsWindow, window or {})
        # The hot issues' journals from Redis, the archived ones' facts from PostgreSQL
        # (shared.archive_stats): the same figures as compute_stats over all journals.
        ids = self.store.issue_ids_received(*bounds.issues_received())
        if communities is not None:
            ids = self.store.only_in_communities(ids, communities)
        hot = hot_facts_for(self.store).facts(self.store, ids, everything=communities is None)
        return stats_over_facts(self.store.archive, hot, bounds.since, bounds.until, utcnow(),
                                communities)

    @timer(interval=ARCHIVE_TICK_S)
    def archive_closed(self) -> None:
        """Move issues closed for WHISTLE_HOT_RETENTION to PostgreSQL."""
        self.archiver.tick()

    @timer(interval=UPGRADE_RETRY_S)
    def upgrade_keys(self) -> None:
        """Finish the key migrations set-up could not (Redis out of reach)."""
        self.upgrades.run()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def board(self, filters: dict | None = None) -> dict:
        """The desk's live board: open issues (or ``status``), most pressing first, at most
        ``limit`` rows, and how many match in all (without the priority filter's cut)."""
        query = self._known_filters(validate(BoardFilter, filters or {}))
        keys = self.store.keys
        filter_keys = ([keys.by_agency(query.agency)] if query.agency else []) + (
            [keys.by_community(query.community)] if query.community else [])
        if query.triage:
            filter_keys.append(keys.triage)  # held or flagged, still pending
        statuses = [query.status.value] if query.status else [s.value for s in OPEN_STATUSES]
        # ``communities`` narrows as ``stats``' does: an empty list is no community, not all
        scope = (None if query.communities is None
                 else [keys.by_community(c) for c in query.communities])
        ids = self.store.pressing_ids(statuses, filter_keys, scope)
        now, rows, total = utcnow(), [], len(ids)
        # A priority filter is read off the records, so read them a page at a time.
        for start in range(0, len(ids), query.limit):
            rows += [board_row(record, now)
                     for record in self.store.load_many(ids[start:start + query.limit])
                     if query.priority is None or record.priority is query.priority]
            if len(rows) >= query.limit or query.priority is None:
                break
        return {"rows": rows[:query.limit], "total": total if query.priority is None else None,
                "as_of": utc_moment(now)}

    # ----------------------------------------------------------------- HTTP

    @http("POST", "/issues", expected_exceptions=EXPECTED_ERRORS)
    def submit_issue_http(self, request):
        principal = self.guard.check(request, action="issue.submit", bucket=SUBMIT,
                                     anonymous=True)
        may_submit(principal, self.guard.anonymous_submit)
        submission = read_json(request, SubmitIssue)
        may_submit_in(principal, submission.location.community)
        receipt = self._submit(submission)  # audited with the write
        return json_response(receipt, 201, {"Location": f"/issues/{receipt['issue_id']}"})

    @http("GET", "/issues/<issue_id>", expected_exceptions=EXPECTED_ERRORS)
    def get_issue_http(self, request, issue_id):
        principal = self.guard.check(request)
        record, view = load_judged(self.store.get_with_notes, issue_id,
                                   lambda r: may_read_issue(principal, r, issue_id))
        # Judged for every caller once authorized: a bad value is the caller's mistake
        # whichever view it gets (only the resident's is worded).
        lang = view_language(query_parameters(request).get("lang"))
        primary = (self.store.get(record.merged_into)
                   if view is View.resident and record.merged_into else None)
        # An agency's notes may name any neighbour who reported it: masked, as the
        # resident's own name is (the desk reads them as written).
        merged = (self.store.contacts(record.reporters)
                  if view is View.agency and record.reporters else {})
        return issue_view(view, record, self.store.contact(issue_id), primary,
                          agency=principal.agency, rates=principal.rates,
                          reporters=[c.get("name") for c in merged.values()], lang=lang)

    @http("GET", "/issues/<issue_id>/events", expected_exceptions=EXPECTED_ERRORS)
    def get_events_http(self, request, issue_id):
        principal = self.guard.check(request)
        load_judged(self.store.get, issue_id, lambda r: may_read_events(principal, r))
        return {"issue_id": issue_id, "events": self.store.journal(issue_id)}

    @http("GET", "/issues", expected_exceptions=EXPECTED_ERRORS)
    def list_issues_http(self, request):
        principal = self.guard.check(request)
        query = validate(IssueFilter, query_flags(self._query(request), ("triage",)))
        scopes = may_list_issues(principal, query)  # another agency's list: 403 first
        self._known_filters(query)
        # One keyset page across Redis and the archive, over every scope the caller may see.
        issues, cursor = self.store.page(scopes, query.limit,
                                         keep=lambda record: visible_in_list(principal, record))
        return {"issues": issues, "next_cursor": cursor}

    @http("GET", "/stats", expected_exceptions=EXPECTED_ERRORS)
    def stats_http(self, request):
        communities = may_read_stats(self.guard.check(request))
        return self._stats(self._query(request), communities)

    @http("POST", "/auth/refresh", expected_exceptions=EXPECTED_ERRORS)
    def refresh_token_http(self, request):
        """A staff token swapped for a fresh one (same claims, new jti; the old one is
        revoked), within the session's maximum age (``WHISTLE_TOKEN_MAX_AGE``)."""
        principal = self.guard.check(request, action="token.refresh")
        if not principal.is_staff:
            raise Forbidden("only staff tokens can be refreshed")
        return self.guard.refresh(principal)

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)

    # ------------------------------------------------------------ internals

    def _submit(self, submission: SubmitIssue) -> dict:
        known = self.open311_services.categories()
        if submission.category is not None and submission.category not in known:
            raise unknown_value("category", submission.category, known, "category",
                                ", or none to let routing decide")
        now = utcnow()
        tz = cfg.get(self.config, cfg.DISPLAY_TZ)
        for _ in range(MAX_ID_TRIES):
            issue_id = self.store.next_issue_id(day_of(now, tz))
            record, contact, received = accept_issue(submission, issue_id, new_id(), now)
            outbox = self.bus.stage(received)
            # The HTTP submission's audit entry goes in with the issue (an RPC one has none).
            audit = self.guard.entry_for_the_write(issue_id, 201)
            if self.store.create(record, contact, self.name, outbox, audit):
                self.guard.audited_with_the_write()
                break
            # The id is taken: the day's counter is behind (lost with a Redis restart).
            self.log.warning("issue_id_taken", issue_id=issue_id)
            self.store.resync_sequence(day_of(now, tz), now.timestamp())
        else:
            raise Unavailable("could not find a free issue id; try again")
        self.log.info("issue_received", issue_id=issue_id, channel=submission.channel.value,
                      community=submission.location.community)
        self.bus.publish(outbox)
        return {"issue_id": issue_id, "trace_id": record.trace_id, "status": record.status.value,
                # Spelled as everywhere else in the API (pydantic's JSON: "...Z").
                "received_at": to_jsonable_python(record.received_at)}

    def _known_filters(self, query: F) -> F:
        """``query``, once its agency is one the rules know (else a 422 naming ``agency``
        and listing them). Status and priority are enums, refused by the model; a
        community is an open set (any name a report gave), so an unknown one lists
        nothing, as a community with no reports yet does."""
        known = self.open311_services.agencies()
        if query.agency is not None and query.agency not in known:
            raise unknown_value("agency", query.agency, known, "agency")
        return query

    @staticmethod
    def _query(request) -> dict:
        """The query string's filters (``shared.web.query_parameters``); an empty one is
        no filter."""
        return {k: v for k, v in query_parameters(request).items() if v != ""}
