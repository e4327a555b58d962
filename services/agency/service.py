"""agency: where departments report in (部门报到) and resolve their part.

Staff authenticate with a bearer token naming their agency
(``whistle token <agency>``) and act only on their own agency's assignments.
The same operations exist over HTTP and RPC; the RPC methods take the token as
their first argument.
"""

from __future__ import annotations

from datetime import datetime

from services.agency.domain import (
    STATUS_FILTERS,
    assignment_view,
    delivery_notes,
    finish_part,
    recently_withdrawn_records,
    report_in,
    withdrawal_note,
    withdrawn_since,
    withdrawn_view,
)
from services.routing.known_codes import KnownAgencies
from shared.auth import Principal, Role
from shared.authz import (
    load_judged,
    may_act_for_agency,
    may_act_on_assignment,
    may_list_issues,
    may_read_assignments,
    visible_in_list,
)
from shared.contracts import (
    AcknowledgeAssignment,
    AssignmentCreated,
    AssignmentQuery,
    AssignmentWithdrawn,
    IssueDispatched,
    IssueFilter,
    ResolveAssignment,
    utcnow,
)
from shared.errors import EXPECTED_ERRORS, Forbidden, InvalidPayload, Unavailable, unknown_value
from shared.guard import Guard
from shared.issue import IssueRecord
from shared.logging import WorkerLogger
from shared.messaging import EventBus, subscribe
from shared.rpc import rpc
from shared.store import Store
from shared.web import has_body, health_report, http, query_parameters, read_json, validate


class AgencyService:
    name = "agency"

    store = Store()
    bus = EventBus()
    log = WorkerLogger()
    guard = Guard()
    known_agencies = KnownAgencies()

    # --------------------------------------------------------------- events

    @subscribe(IssueDispatched, AssignmentCreated)
    def record_assignment(self, event: IssueDispatched | AssignmentCreated) -> None:
        """Put the delivery of the 派单 to each agency on the issue's timeline (notes).

        A dispatch's assignments come together in ``issue.dispatched`` (one delivery
        for all of them); ``assignment.created`` brings one added later.
        """
        notes = delivery_notes(event)
        fresh = self.store.add_notes(event.issue_id, notes)
        self.log.info("assignment_delivered", issue_id=event.issue_id,
                      agencies=[note.agency for note in notes.values()],
                      duplicate=not any(fresh.values()))

    @subscribe(AssignmentWithdrawn)
    def record_withdrawal(self, event: AssignmentWithdrawn) -> None:
        """A reroute took this agency's part away. Its workspace (the open-assignments
        index) already dropped the issue in the commit that withdrew it; this notes on
        the issue's timeline that the agency was told, once per event."""
        note_id, entry = withdrawal_note(event)
        fresh = self.store.add_note(event.issue_id, note_id, entry)
        self.log.info("assignment_withdrawn", issue_id=event.issue_id,
                      agency=event.agency.agency, duplicate=not fresh)

    # ------------------------------------------------------------------ RPC
    # RPC methods take the staff token as their first argument: it says who acts (the
    # audit log, the record's acknowledged_by) and which agency. Revoked tokens are
    # refused here too.

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_assignments(self, token: str, agency: str, status: str = "open") -> list[dict]:
        principal = self.guard.staff(token)
        self._may(may_read_assignments, principal, agency)
        if status == "withdrawn":
            self._known(agency)
            # A bare list cannot say that it lacks the archived part: refused, as any
            # list needing the archive is while it is down (list_withdrawn says so).
            withdrawn = self._withdrawn(principal, agency, utcnow())
            if withdrawn["archive_unavailable"]:
                raise Unavailable("archive unavailable: the withdrawn list's archived "
                                  "issues cannot be read")
            return withdrawn["assignments"]
        return self._assignments(principal, agency, status)[0]  # the first page

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_withdrawn(self, token: str, agency: str) -> dict:
        """``?status=withdrawn``'s answer: ``{"assignments": [...], "archive_unavailable":
        bool}``; with the archive down, the issues still in Redis and ``true``."""
        principal = self.guard.staff(token)
        self._may(may_read_assignments, principal, agency)
        self._known(agency)
        return self._withdrawn(principal, agency, utcnow())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def acknowledge(self, token: str, agency: str, issue_id: str,
                    payload: dict | None = None) -> dict:
        staff = self.guard.staff(token, "assignment.acknowledge", issue_id)
        self._may_act(staff, agency, issue_id)
        return self._acknowledge(staff, agency, issue_id, payload)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def resolve(self, token: str, agency: str, issue_id: str, payload: dict | None = None) -> dict:
        staff = self.guard.staff(token, "assignment.resolve", issue_id)
        self._may_act(staff, agency, issue_id)
        return self._resolve(staff, agency, issue_id, payload)

    # ----------------------------------------------------------------- HTTP

    @http("GET", "/agencies/<agency>/assignments", expected_exceptions=EXPECTED_ERRORS)
    def list_assignments_http(self, request, agency):
        principal = self.guard.check(request)
        self._may(may_read_assignments, principal, agency)
        query = validate(AssignmentQuery, query_parameters(request))
        if query.status == "withdrawn":
            self._known(agency)
            self._one_page(query.status, query.cursor)
            # With the archive down, the issues still in Redis, and said so.
            return {"agency": agency, "status": query.status, "next_cursor": None,
                    **self._withdrawn(principal, agency, utcnow())}
        assignments, next_cursor = self._assignments(principal, agency, query.status,
                                                     query.limit, query.cursor)
        return {"agency": agency, "status": query.status, "assignments": assignments,
                "next_cursor": next_cursor}

    @http("POST", "/agencies/<agency>/assignments/<issue_id>/acknowledge",
          expected_exceptions=EXPECTED_ERRORS)
    def acknowledge_http(self, request, agency, issue_id):
        staff = self.guard.check(request, "assignment.acknowledge", issue_id)
        self._may_act(staff, agency, issue_id)  # before the body: 403, never a 400/422
        body = read_json(request, AcknowledgeAssignment) if has_body(request) else None
        return self._acknowledge(staff, agency, issue_id, body and body.model_dump())

    @http("POST", "/agencies/<agency>/assignments/<issue_id>/resolve",
          expected_exceptions=EXPECTED_ERRORS)
    def resolve_http(self, request, agency, issue_id):
        staff = self.guard.check(request, "assignment.resolve", issue_id)
        self._may_act(staff, agency, issue_id)  # before the body: 403, never a 400/422
        # No body at all is a resolution without its note: said as such (a 422 naming
        # ``note``), not as a wrong Content-Type.
        body = (read_json(request, ResolveAssignment) if has_body(request)
                else validate(ResolveAssignment, {}))
        return self._resolve(staff, agency, issue_id, body.model_dump())

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)

    # ------------------------------------------------------------ internals

    def _assignments(self, principal: Principal, agency: str, status: str, limit: int = 500,
                     cursor: str | None = None) -> tuple[list[dict], str | None]:
        """``agency``'s assignments as ``principal`` may list them, and the next page's
        cursor: a desk token scoped to some communities gets only those communities'
        (``GET /issues``'s narrowing and second check). ``open`` is every open assignment,
        from Redis, in one list (``withdrawn``: :meth:`_withdrawn`); the others page
        newest first across Redis and the archive, ``limit`` issues a page (fewer
        assignments when an issue's part has another status: the cursor still moves
        past it)."""
        self._known(agency)
        wanted = STATUS_FILTERS.get(status) if isinstance(status, str) else None
        if wanted is None:
            raise InvalidPayload(f"invalid status: {status!r}", [{
                "field": "status", "message": f"must be one of {', '.join(STATUS_FILTERS)}",
                "type": "enum"}])
        assert status != "withdrawn", "listed by _withdrawn, with whether the archive was read"
        next_cursor = None
        self._one_page(status, cursor)
        now = utcnow()
        if status == "open":
            records = self.store.open_for_agency(agency)
        else:
            queries = may_list_issues(principal, IssueFilter(agency=agency, limit=limit,
                                                             cursor=cursor))
            # Across Redis and the archive, as GET /issues: an agency's finished work
            # stays in its list once its issue is archived.
            entries, next_cursor = self.store.page(queries, limit)
            records = self.store.get_many([e["issue_id"] for e in entries])
        records = [r for r in records if visible_in_list(principal, r)
                   and agency in r.agencies() and r.assignment_for(agency).status in wanted]
        names = self._names_for(principal, records)
        return [assignment_view(r, agency, now, names.get(r.issue_id)) for r in records
                ], next_cursor

    def _names_for(self, principal: Principal, records: list[IssueRecord]
                   ) -> dict[str, list[str | None]]:
        """For agency staff, each issue's resident's name and its merged neighbours', to
        mask in the notes and tasks they read (``shared.authz.agency_view``); none for the
        desk, which reads them as written."""
        if principal.role is not Role.agency or not records:
            return {}
        return self.store.residents_names(records)

    def _known(self, agency: str) -> None:
        known = self.known_agencies()
        if known is not None and agency not in known:  # a desk's typo listed nothing
            raise unknown_value("agency", agency, known, "agency")

    @staticmethod
    def _one_page(status: str, cursor: str | None) -> None:
        if status in ("open", "withdrawn") and cursor is not None:
            raise InvalidPayload(f"the {status} list is one page", [{
                "field": "cursor", "type": "not_paged",
                "message": f"status={status} lists every {status} assignment at once; "
                           "cursor pages the other statuses"}])

    def _withdrawn(self, principal: Principal, agency: str, now: datetime) -> dict:
        """The issues a desk's reroute took from ``agency`` in the last
        ``RECENTLY_WITHDRAWN_DAYS`` (it has no part on them now), the latest withdrawal
        first: read-only, apart from the work lists, so staff can still find a case they
        were told is no longer theirs. From Redis and, once an issue has left it (a day
        after closing, ``WHISTLE_HOT_RETENTION``), from the archive's index of
        withdrawals. The archive down, the hot ones still answer, with
        ``archive_unavailable``: the workspace must not lose its work over a list of
        what is no longer its work."""
        hot = self.store.withdrawn_from_agency(agency)
        try:
            archived = self.store.archived_withdrawn_from_agency(agency, withdrawn_since(now))
            archive_unavailable = False
        except Unavailable as exc:
            self.log.warning("withdrawn_archive_unavailable", agency=agency, error=str(exc))
            archived, archive_unavailable = [], True
        records = [r for r in recently_withdrawn_records(hot, archived, agency, now)
                   if visible_in_list(principal, r)]
        return {"assignments": [withdrawn_view(r, agency) for r in records],
                "archive_unavailable": archive_unavailable}

    def _acknowledge(self, staff: Principal, agency: str, issue_id: str,
                     payload: dict | None) -> dict:
        """报到, by ``staff`` already judged (:meth:`_may_act`); the store's change checks
        the assignment again under its lock."""
        body = validate(AcknowledgeAssignment, payload or {})
        now = utcnow()
        applied = self.store.apply(
            issue_id, None,
            lambda r: self._staged(report_in(r, agency, staff.staff_id, now, body.note)),
            self.name)
        self.bus.publish(applied.outbox)
        self.log.info("assignment_acknowledged", issue_id=issue_id, agency=agency,
                      staff_id=staff.staff_id, jti=staff.jti)
        return assignment_view(applied.record, agency, now,
                               self._names_for(staff, [applied.record]).get(issue_id))

    def _resolve(self, staff: Principal, agency: str, issue_id: str,
                 payload: dict | None) -> dict:
        """Resolve ``agency``'s part, by ``staff`` already judged (:meth:`_may_act`)."""
        body = validate(ResolveAssignment, payload or {})
        now = utcnow()
        applied = self.store.apply(
            issue_id, None,
            lambda r: self._staged(finish_part(r, agency, staff.staff_id, body.note, now)),
            self.name)
        self.bus.publish(applied.outbox)
        self.log.info("assignment_resolved", issue_id=issue_id, agency=agency,
                      staff_id=staff.staff_id, jti=staff.jti,
                      issue_status=applied.record.status.value)
        return assignment_view(applied.record, agency, now,
                               self._names_for(staff, [applied.record]).get(issue_id))

    def _may_act(self, staff: Principal, agency: str, issue_id: str) -> None:
        """``staff`` may act on ``agency``'s assignment on the issue (read for it only
        once the token is for that agency: another agency's token learns nothing)."""
        self._may(may_act_for_agency, staff, agency, issue_id)
        self._may(lambda p, a: load_judged(self.store.get, issue_id,
                                           lambda r: may_act_on_assignment(p, a, r)),
                  staff, agency, issue_id)

    def _may(self, decision, principal: Principal, agency: str, issue_id: str | None = None):
        try:
            decision(principal, agency)
        except Forbidden:
            # Logged without personal data: who tried, on what, nothing about the resident.
            self.log.warning("forbidden_attempt", agency=agency, issue_id=issue_id,
                             role=principal.role.value, by_agency=principal.agency,
                             staff_id=principal.staff_id, jti=principal.jti)
            raise

    def _staged(self, result):
        record, events = result
        return record, self.bus.stage(*events)
