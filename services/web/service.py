"""web: the pages (the desk console, the agency workspace, the resident's page, the
operator's view), served by Whistle itself.

The pages own no data. Every read and every change is an RPC to the service that
owns it (intake, routing, agency, notify), with the signed-in person's own token,
so the pages pass through exactly the door the HTTP API uses: a page can never do
what the token could not do over the API. This service adds only what a browser
needs: a server-side session behind an HttpOnly cookie, CSRF checks on forms, HTML
in the reader's language, and security headers. Entrypoints stay thin: texts,
labels and charts are worked out in ``views.py``.

Who may open what:

- ``/desk/...``: community desk staff (a ``desk`` token), within its communities;
- ``/agency/...``: agency staff, their own agency's work only;
- ``/resident/{id}?token=`` and ``/issues/{id}/feedback?token=``: the resident holding
  that link (a progress or a rating link); nobody needs to sign in;
- ``/ops``: operators: desk staff whose token is not scoped to communities (the flow
  and the queues cover every community);
- ``/signin``, ``/static/...``: anyone.

Every decision is ``shared.authz``'s, on the principal ``shared.guard`` admits (the
token verified, not revoked, within its rate limit; writes audited), exactly as the
API handlers decide; and the owning service checks the token again on its RPC.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import eventlet
from nameko.dependency_providers import Config
from nameko.exceptions import MethodNotFound, RemoteError
from pydantic import ValidationError
from werkzeug.wrappers import Response

from services.notify.relays import (
    RATING_REQUEST,
    RELAY_LIST_LIMIT,
    moot_relay_note,
    rating_request_moot,
)
from services.routing.merging import split_refusal
from services.web import views
from services.web.catalogue import Catalogue
from services.web.flow import FlowTap
from services.web.pages import page as http
from services.web.pages import (
    reader_language,
    redirect,
    render,
    static_file,
)
from services.web.sessions import COOKIE, SIGNIN_CSRF_COOKIE, Session, Sessions, csrf_matches
from shared import authz
from shared import config as cfg
from shared.auth import TOKEN_QUERY_PARAMETER, Principal, verify_token
from shared.contracts import (
    ISSUE_ID,
    RECENTLY_WITHDRAWN_DAYS,
    IssueFilter,
    IssueStatus,
    utcnow,
)
from shared.errors import (
    Forbidden,
    InvalidPayload,
    InvalidTransition,
    NotFound,
    Unauthorized,
    Unavailable,
    WhistleError,
)
from shared.guard import READ, SUBMIT, Guard
from shared.issue import IssueRecord
from shared.jsoncodec import dumps_bytes
from shared.logging import WorkerLogger
from shared.rpc import RpcProxy
from shared.web import health_report, json_response

RPC_TIMEOUT_S = 10.0
# The workspace shows this many open assignments, the most pressing first (and says how
# many there are): at 5,000 open issues the power company had 1,250, a 1 MB page.
WORKSPACE_CARDS = 100


class FormExpired(Forbidden):
    """A cookie-authenticated form without its session's CSRF secret."""

    code = "csrf"


class NoAnswer(Unavailable):
    """The owning service did not answer in time: it may never have seen the call."""


class SessionRequest:
    """A page request as the API's guard reads one: the session's token as the bearer.

    The pages keep the token server-side (the cookie holds only a session id), so the
    guard (revocation, rate limit, audit) and ``shared.authz`` decide on exactly what
    the same token would get over the API.
    """

    def __init__(self, request, token: str):
        self.headers = {"Authorization": f"Bearer {token}"}
        self.args = request.args
        self.remote_addr = request.remote_addr


class WebService:
    name = "web"

    intake = RpcProxy("intake")
    routing = RpcProxy("routing")
    agency = RpcProxy("agency")
    notify = RpcProxy("notify")
    guard = Guard()
    names = Catalogue()
    sessions = Sessions()
    flow = FlowTap()
    log = WorkerLogger()
    config = Config()

    # ------------------------------------------------------------ the door

    @http("GET", "/")
    def home(self, request):
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return redirect("/signin")
        return redirect(self._home_of(self._principal(request, session)))

    @http("GET", "/health")
    def health(self, request):
        """200 when Redis (the sessions) answers: the compose container's health check."""
        return health_report(self.name, self.sessions.redis)

    @http("GET", "/static/<path:name>")
    def static(self, request, name):
        return static_file(request, name)

    @http("GET", "/signin")
    def signin_form(self, request):
        return self._signin_page(request)

    @http("POST", "/signin")
    def signin(self, request):
        # Login CSRF: the form's secret must match the cookie set with the form.
        expected = request.cookies.get(SIGNIN_CSRF_COOKIE)
        if not csrf_matches(expected, request.form.get("csrf")):
            return self._signin_page(request, error="csrf_bad", status=403)
        token = (request.form.get("token") or "").strip()
        try:
            verify_token(token, self._secret())  # a staff token, not a resident's link
            principal = self.guard.check(SessionRequest(request, token), action="web.signin")
        except Unauthorized:
            return self._signin_page(request, error="signin_bad", status=401)
        session = self.sessions.create(token, (principal.expires_at or 0) - int(time.time()))
        self.log.info("web_signed_in", **principal.audit_fields())
        response = redirect(self._home_of(principal))
        response.set_cookie(COOKIE, session.sid, httponly=True, samesite="Strict", path="/",
                            secure=self._secure_cookies())
        response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
        return response

    @http("POST", "/signout")
    def signout(self, request):
        session = self._session(request)
        self._check_form(request, session)
        self.sessions.delete(session.sid)
        response = redirect("/signin")
        response.delete_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------- the desk

    @http("GET", "/desk")
    def board(self, request):
        session, principal = self._desk(request)
        t = views.Translator(reader_language(request))
        try:
            filters = self._board_filters(request)
            board = self._rpc(self.intake.board, self._scoped(principal, filters))
        except InvalidPayload as exc:
            # A filter edited into the address: the 422 page names it in the page's
            # language ("invalid request: priority" was the API's English on a Chinese page).
            raise InvalidPayload(views.bad_filter(exc.errors, t), exc.errors) from None
        return self._page(request, "board.html", session, principal, filters=filters,
                          rows=views.board_rows(board["rows"], t, self.names, tz=self._tz()), total=board["total"],
                          statuses=STATUSES, priorities=PRIORITIES, query=urlencode(filters))

    @http("GET", "/desk/board.json")
    def board_json(self, request):
        _, principal = self._desk(request)
        board = self._rpc(self.intake.board, self._scoped(principal, self._board_filters(request)))
        t = views.Translator(reader_language(request))
        # Only what the board draws; an unchanged board is a 304 (the browser revalidates
        # every poll: ETag, no-cache), so an idle open board costs a few hundred bytes.
        body = dumps_bytes({"rows": [{k: row[k] for k in views.BOARD_FIELDS}
                               for row in views.board_rows(board["rows"], t, self.names, tz=self._tz())],
                      "total": board["total"]})
        etag = hashlib.sha256(body).hexdigest()[:32]
        if etag in request.if_none_match:
            return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})
        return Response(body, mimetype="application/json",
                        headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})

    @http("GET", "/desk/triage")
    def triage_queue(self, request):
        """Reports routing was unsure of: each suggestion is one click (a triage decision)."""
        session, principal = self._desk(request)
        went = request.args.get("issue", "")  # the issue a triage just sent on
        return self._triage_page(request, session, principal, done=request.args.get("done"),
                                 done_issue=went if ISSUE_ID.fullmatch(went) else None)

    def _triage_page(self, request, session: Session, principal: Principal, status: int = 200,
                     **context):
        board = self._rpc(self.intake.board, self._scoped(principal, {"triage": True}))
        t = views.Translator(reader_language(request))
        return self._page(request, "triage.html", session, principal, status=status,
                          rows=views.board_rows(board["rows"], t, self.names, tz=self._tz()),
                          request_id=uuid.uuid4().hex, **context)

    @http("POST", "/desk/issues/<issue_id>/triage")
    def triage_issue(self, request, issue_id):
        back = "/desk/triage" if request.args.get("from") == "triage" else None
        return self._desk_call(request, issue_id, "issue.triage", self.routing.triage_issue,
                               _route, back=back, form_key="route")

    @http("POST", "/desk/issues/<issue_id>/reroute")
    def reroute_issue(self, request, issue_id):
        return self._desk_call(request, issue_id, "issue.reroute", self.routing.reroute_issue,
                               _route, form_key="route")

    @http("GET", "/desk/relay")
    def relay_page(self, request):
        """Messages the desk passes on by phone or in person (待转告), oldest first, each
        with whom to call in full: notify reads them out, and audits the read."""
        session, principal = self._desk(request)
        return self._relay_page(request, session, principal, done=request.args.get("done"))

    def _relay_page(self, request, session: Session, principal: Principal,
                    status: int = 200, **context):
        items = self._rpc(self.notify.desk_relays, session.token)
        t = views.Translator(reader_language(request))
        # notify lists the oldest messages waiting, at most RELAY_LIST_LIMIT: a full list
        # says that more wait behind them.
        more = len(items) if len(items) >= RELAY_LIST_LIMIT else 0
        cards = views.relay_cards(items, self._tz(), t, self._moot_rating_requests(items))
        # A resident with neither phone nor email is visited: the card said so and not
        # where. It says where the problem is (intake owns the issue; notify's outbox
        # holds the message and whom to tell, not the place), once an issue.
        places = {issue_id: self._place(issue_id)
                  for issue_id in {c["issue_id"] for c in cards if views.to_visit(c)}}
        for card in cards:
            card["place"] = places.get(card["issue_id"]) if views.to_visit(card) else None
        return self._page(request, "relay.html", session, principal, status=status,
                          cards=cards, more=more, **context)

    def _moot_rating_requests(self, items: list[dict]) -> dict[str, str]:
        """The rating requests on the list whose answer can no longer be recorded, by id,
        and why (``relays.rating_request_moot``): the issue closed, the resident answered
        (through the desk's call-back, or their own link)... Asked of intake, which owns the
        issues (notify's outbox holds the message, not the issue's state), once an issue.
        One that cannot be read (archived meanwhile with the archive down, ...) is shown as
        a request to ask, as it was."""
        issues: dict[str, dict | None] = {}

        def issue(issue_id: str) -> dict | None:
            if issue_id not in issues:
                try:
                    issues[issue_id] = self._rpc(self.intake.get_issue, issue_id)
                except (NotFound, Unavailable):  # NoAnswer is one
                    issues[issue_id] = None
            return issues[issue_id]

        now, moot = utcnow(), {}
        for item in items:
            if item.get("kind") != RATING_REQUEST or item.get("audience") != "resident":
                continue
            own = issue(item["issue_id"])
            work = own and (issue(own["merged_into"]) if own.get("merged_into") else own)
            if work and (why := rating_request_moot(item, own, work, now)):
                moot[item["notification_id"]] = why
        return moot

    def _place(self, issue_id: str) -> str | None:
        """Where an issue's problem is (community · address), or None if it cannot be read
        (archived meanwhile with the archive down, …): the card then says what it said."""
        try:
            location = self._rpc(self.intake.get_issue, issue_id)["location"]
        except (NotFound, Unavailable):  # NoAnswer is one
            return None
        return " · ".join(v for v in (location.get("community"), location.get("address")) if v)

    @http("POST", "/desk/relay/<notification_id>")
    def mark_relayed(self, request, notification_id):
        """The desk told the resident (or the office): off the list, on the issue."""
        session, principal = self._desk(request, action="relay.mark")
        form = self._check_form(request, session)
        note = (form.get("note") or "").strip()
        # A card's other messages to the same person (views.relay_cards): one call told
        # them all. Each is judged by notify on its own; past the card's size, a 422.
        also = form.get("also") or []
        if len(also) >= views.RELAY_CARD_MESSAGES:
            raise InvalidPayload("too many messages at once", [{
                "field": "also", "type": "too_long",
                "message": f"at most {views.RELAY_CARD_MESSAGES - 1} more messages"}])

        # The card's rating requests that can no longer be answered leave with it, their
        # records saying they were not asked (the page said so beside each).
        moot = set(form.get("moot") or ())

        def relay_all():
            for nid in (notification_id, *also):
                said = moot_relay_note(note) if nid in moot else note
                self.notify.mark_relayed(session.token, nid, {"note": said} if said else {})

        return self._acted(
            relay_all,
            "/desk/relay", _again(request, lambda status, **context: self._relay_page(
                request, session, principal, status=status, here="/desk/relay", **context)),
            "relay.mark")

    @http("GET", "/desk/new")
    def new_issue_form(self, request):
        session, principal = self._desk(request)
        return self._page(request, "new_issue.html", session, principal, form={}, errors={},
                          request_id=uuid.uuid4().hex)

    @http("POST", "/desk/new")
    def new_issue(self, request):
        session, principal = self._desk(request, action="issue.submit", bucket=SUBMIT)
        form = self._check_form(request, session)
        body = views.submission_from_form(form)
        key = views.submission_key(form.get("request_id"), body)
        if key is not None and (earlier := self._sent_before(session, key)):
            # The same form sent again (a double click): the issue the first send created.
            self.guard.on_issue(earlier, status=200)
            return redirect(f"/desk/issues/{earlier}?done=submitted")
        try:
            if community := (form.get("location.community") or "").strip():
                authz.may_submit_in(principal, community)  # blank: the API's "missing"
            receipt = self._rpc(self.intake.submit_issue, body)
        except (InvalidPayload, Forbidden) as exc:
            if key is not None:
                self.sessions.forget_submission(session.sid, key)
            if not exc.errors:  # a refusal of the person, not of a field
                raise
            # The API's own 422 (or a scoped desk's 403 for another community), each
            # field's error shown beside that field (one the form lacks, at the top).
            shown, unshown = _shown(request, exc.errors, "new_issue")
            return self._page(request, "new_issue.html", session, principal,
                              status=exc.status, form=form, errors=shown, error=unshown,
                              request_id=uuid.uuid4().hex)
        except BaseException:
            if key is not None:
                self.sessions.forget_submission(session.sid, key)
            raise
        if key is not None:
            self.sessions.record_submission(session.sid, key, receipt["issue_id"])
        # intake's submit_issue takes no token: this page's is the submission's one entry,
        # with the submission's outcome (201, as POST /issues), not the redirect's 303.
        self.guard.on_issue(receipt["issue_id"], status=201)
        return redirect(f"/desk/issues/{receipt['issue_id']}?done=submitted")

    def _sent_before(self, session: Session, key: str) -> str | None:
        """None: this send goes to intake (claimed). Else the issue an identical earlier
        send of the same form created, waited for while that send is under way."""
        deadline = time.monotonic() + RPC_TIMEOUT_S
        while not self.sessions.claim_submission(session.sid, key):
            issue_id = self.sessions.submitted_issue(session.sid, key)
            if issue_id:
                return issue_id
            if time.monotonic() > deadline:
                raise NoAnswer("the same report, sent a moment ago, is still being submitted")
            eventlet.sleep(0.05)
        return None

    @http("GET", "/desk/issues/<issue_id>")
    def issue_page(self, request, issue_id):
        session, principal = self._desk(request)
        return self._issue_page(request, session, principal, issue_id,
                                done=request.args.get("done"))

    def _issue_page(self, request, session: Session, principal: Principal, issue_id: str,
                    status: int = 200, **context):
        """The issue page; ``context``: what happened (``done``, ``error``), or a form that
        failed (``failed``, its ``form`` as typed and its field ``errors``)."""
        try:
            issue = self._rpc(self.intake.get_issue, issue_id)
        except NotFound:  # refused as for an issue elsewhere: nothing said of which exist
            authz.judge_unknown(issue_id, lambda r: authz.may_read_issue(principal, r, issue_id))
            raise
        record = IssueRecord.model_validate(issue)
        authz.may_read_issue(principal, record, issue_id)
        shown = authz.may_read_notifications(principal, record, issue_id)
        messages = authz.notifications_view(
            shown, self._rpc(self.notify.list_notifications, issue_id))
        t = views.Translator(reader_language(request))
        work = (self._rpc(self.intake.get_issue, issue["merged_into"])
                if issue.get("merged_into") else issue)
        rating = views.rating_awaited(issue, work)
        # A merged report the desk may no longer split (merging.split_refusal): the page
        # says why where the button was, rather than offer one routing refuses.
        split_refused = (split_refusal(IssueRecord.model_validate(work), issue_id)
                         if issue.get("merged_into") else None)
        if rating is not None:  # whether a resend could reach the resident: notify knows
            rating = views.with_reach(rating, self._rpc(self.notify.rating_link_reach,
                                                        session.token, issue_id))
        return self._page(request, "issue.html", session, principal, status=status,
                          issue=issue, rating=rating, split_refused=split_refused,
                          timeline=views.timeline_rows(issue["timeline"], t, self.names,
                                                       self._tz()),
                          messages=views.messages_view(messages, self._tz(), t),
                          request_id=uuid.uuid4().hex, **context)

    @http("POST", "/desk/issues/<issue_id>/table")
    def convene_table(self, request, issue_id):
        return self._desk_action(request, issue_id, "table.convene",
                                 lambda token, form: self.routing.convene_table(
            token, issue_id, {"meets_at": self._local_datetime(form.get("meets_at")),
                              "place": form.get("place", ""),
                              "agencies": _agency_codes(form.get("agencies"))}))

    @http("POST", "/desk/issues/<issue_id>/table/agencies")
    def invite_to_table(self, request, issue_id):
        return self._desk_action(request, issue_id, "table.invite",
                                 lambda token, form: self.routing.invite_to_table(
            token, issue_id, {"agencies": _agency_codes(form.get("agencies"))}))

    @http("POST", "/desk/issues/<issue_id>/table/tasks")
    def record_table_task(self, request, issue_id):
        return self._desk_action(request, issue_id, "table.task",
                                 lambda token, form: self.routing.record_table_task(
            token, issue_id, {"description": form.get("description", ""),
                              "due": self._local_datetime(form.get("due")),
                              # left out when blank: "required", not "wrong format"
                              **({"agency": agency} if (agency := form.get("agency", "").strip())
                                 else {})}))

    @http("POST", "/desk/issues/<issue_id>/table/tasks/<task_id>/close")
    def close_table_task(self, request, issue_id, task_id):
        return self._desk_action(request, issue_id, "table.close_task",
                                 lambda token, form: self.routing.close_table_task(
            token, issue_id, task_id, {"note": form.get("note", "")}),
                                 form_key=f"close-{task_id}")

    @http("POST", "/desk/issues/<issue_id>/split")
    def split_issue(self, request, issue_id):
        return self._desk_action(request, issue_id, "issue.split",
                                 lambda token, form: self.routing.split_issue(token, issue_id))

    @http("POST", "/desk/issues/<issue_id>/rating")
    def record_rating(self, request, issue_id):
        """The desk records the answer of a resident it called back or visited (电话回访)."""
        return self._desk_call(request, issue_id, "issue.record_rating",
                               self.routing.record_rating, _recorded_rating, form_key="rating")

    @http("POST", "/desk/issues/<issue_id>/rating-link")
    def resend_rating_link(self, request, issue_id):
        """Send the resident's rating link again, straight to their phone or email."""
        def resend(token, _form):
            sent = self.notify.resend_rating_link(token, issue_id)
            if sent["status"] != "sent":  # nothing retries a resend: say it did not go
                raise InvalidTransition(f"the rating link was not sent: {sent['channel']} "
                                        f"refused it ({sent['detail'] or 'no reason'}); "
                                        "try again")
        return self._desk_action(request, issue_id, "rating_link.resend", resend,
                                 form_key="rating-link")

    @http("GET", "/desk/stats")
    def stats_page(self, request):
        session, principal = self._desk(request)
        communities = authz.may_read_stats(principal)  # None: every community
        t = views.Translator(reader_language(request))
        asked = request.args.get("days")
        days = views.stats_window(asked)
        days_error = None if days is not None else t(
            "days_invalid", most=views.STATS_MAX_DAYS, days=views.STATS_DEFAULT_DAYS)
        days = days or views.STATS_DEFAULT_DAYS  # the figures shown beside the error
        until = utcnow()
        stats = self._rpc(self.intake.stats, {"since": (until - timedelta(days=days)).isoformat(),
                                              "until": until.isoformat()},
                          None if communities is None else sorted(communities))
        rows = [(t("overall"), stats["overall"])] + [
            (self.names.agency(code, t.lang), block) for code, block in sorted(stats["agencies"].items())]
        charts = [views.rate_chart([(name, block[key]) for name, block in rows], t(key))
                  for key in ("response_rate", "resolution_rate", "satisfaction_rate")]
        charts.append(views.count_chart([(name, block["escalated"]) for name, block in rows],
                                        t("escalations")))
        return self._page(request, "stats.html", session, principal,
                          status=422 if days_error else 200, days=days, rows=rows,
                          days_typed=asked if days_error else None, days_error=days_error,
                          charts=charts, percent=views.percent, seconds=views.seconds_text,
                          # an intake of an older release (mid-upgrade) does not split them
                          by_rater="rated_by" in stats["overall"])

    # ------------------------------------------------------ the agency staff

    @http("GET", "/agency")
    def workspace(self, request):
        session, principal = self._signed_in(request)
        return self._workspace(request, session, principal, done=request.args.get("done"))

    def _workspace(self, request, session: Session, principal: Principal, status: int = 200,
                   **context):
        """The agency's workspace; ``context`` as for :meth:`_issue_page`."""
        if principal.is_desk:
            raise Forbidden("the workspace is for agency staff")
        authz.may_read_assignments(principal, principal.agency)
        assignments = self._rpc(self.agency.list_assignments, session.token, principal.agency,
                                "open")
        assignments.sort(key=lambda a: _next_deadline(a) or "")
        # A long list pages, by deadline: every card within reach, WORKSPACE_CARDS a page.
        page = views.workspace_page(request.args.get("page"), len(assignments),
                                    WORKSPACE_CARDS, views.Translator(reader_language(request)))
        # Apart from the work: what a desk's reroute recently took from the agency (issue
        # 15: it still reads those issues, and here it can find them).
        # With the archive down, those still in Redis, and a line saying the rest cannot
        # be read: the work above never waits on the archive.
        withdrawn = self._withdrawn_list(session.token, principal.agency)
        return self._page(request, "agency.html", session, principal, status=status,
                          assignments=assignments[page.cards], total=len(assignments),
                          page=page, next_deadline=_next_deadline,
                          withdrawn=withdrawn["assignments"],
                          withdrawn_archive_unavailable=withdrawn["archive_unavailable"],
                          withdrawn_archive_not_read=withdrawn["archive_not_read"],
                          withdrawn_days=RECENTLY_WITHDRAWN_DAYS, **context)

    def _withdrawn_list(self, token: str, agency: str) -> dict:
        """``agency.list_withdrawn``, and ``archive_not_read``: false from it.

        Mid-upgrade, an agency of the release before it has no such method (nameko's
        MethodNotFound): its ``list_assignments(..., "withdrawn")`` then, a list of the
        issues still in Redis only, which that release never looked past. The workspace
        shows them and says the archived ones may be missing, rather than a 503 page."""
        try:
            answer = self._rpc(self.agency.list_withdrawn, token, agency)
        except MethodNotFound:
            listed = self._rpc(self.agency.list_assignments, token, agency, "withdrawn")
            return {"assignments": listed, "archive_unavailable": False,
                    "archive_not_read": True}
        return {**answer, "archive_not_read": False}

    @http("POST", "/agency/<agency>/assignments/<issue_id>/acknowledge")
    def acknowledge(self, request, agency, issue_id):
        return self._agency_action(request, agency, issue_id, "assignment.acknowledge",
                                   lambda token, form: self.agency.acknowledge(
            token, agency, issue_id, {"note": form.get("note") or None}),
                                   form_key=f"ack-{issue_id}")

    @http("POST", "/agency/<agency>/assignments/<issue_id>/resolve")
    def resolve(self, request, agency, issue_id):
        return self._agency_action(request, agency, issue_id, "assignment.resolve",
                                   lambda token, form: self.agency.resolve(
            token, agency, issue_id, {"note": form.get("note", "")}),
                                   form_key=f"res-{issue_id}")

    @http("POST", "/agency/<agency>/issues/<issue_id>/table/check-in")
    def check_in(self, request, agency, issue_id):
        return self._agency_action(request, agency, issue_id, "table.check_in",
                                   lambda token, form: self.routing.check_in_at_table(
            token, issue_id))

    @http("POST", "/agency/<agency>/issues/<issue_id>/table/tasks/<task_id>/done")
    def task_done(self, request, agency, issue_id, task_id):
        return self._agency_action(request, agency, issue_id, "table.task_done",
                                   lambda token, form: self.routing.complete_table_task(
            token, issue_id, task_id, {"note": form.get("note", "")}),
                                   form_key=f"td-{issue_id}-{task_id}")

    # ---------------------------------------------------------- the resident

    @http("GET", "/resident/<issue_id>")
    def resident_page(self, request, issue_id):
        """The resident's page, at a progress link (from the first message on) or a
        rating link: the token in ``?token=`` is the only key, nobody signs in."""
        token = request.args.get(TOKEN_QUERY_PARAMETER, "")
        try:
            self.guard.check(request)  # the link verified, the rate limit counted
            # The page's language (?lang=, the cookie), else the report's: the status
            # and progress are worded by routing, so it is told which.
            asked = reader_language(request, fallback="")
            view = self._rpc(self.routing.resident_view, issue_id, token, asked or None)
        except (Unauthorized, Forbidden, NotFound, InvalidPayload) as exc:
            return self._resident_problem(request, exc)
        lang = view["language"]
        return render(request, "resident.html", lang=lang, view=view, token=token,
                      rated=request.args.get("rated"), tz=self._tz())

    @http("GET", "/issues/<issue_id>/feedback")
    def rating_link_page(self, request, issue_id):
        """The rating link residents were sent before their messages linked to
        ``/resident/{id}``: the same page."""
        return self.resident_page(request, issue_id)

    @http("POST", "/resident/<issue_id>/rating")
    def resident_rating(self, request, issue_id):
        # No cookie is involved: the form carries the link's own token, which is what
        # authorizes it (a forged form would need that token), so no CSRF secret.
        token = request.form.get("token", "")
        if not token:
            # No link at all: nobody to rate for. Refused as a bad link is, not sent on
            # to the resident's page as if a link had come with a bad rating.
            return self._resident_problem(request, Unauthorized("no link"))
        body = {"token": token, "rating": request.form.get("rating", "")}
        # A browser counts a line break in the box as one character (maxlength) and sends
        # it as two (CRLF): a comment the box allowed was refused as too long.
        comment = (request.form.get("comment") or "").replace("\r\n", "\n")
        if comment.strip():
            body["comment"] = comment
        try:
            # Counted against the link's rate limit as the API's rating is (and as this
            # page's GET is): the form was the one request a resident's link could send
            # without limit, and each one an RPC and an audit entry.
            self.guard.check_token(token, address=request.remote_addr)
            result = self._rpc(self.routing.submit_feedback, issue_id, body)
        except (Unauthorized, Forbidden, NotFound) as exc:
            return self._resident_problem(request, exc)
        except InvalidPayload:
            return redirect(self._resident_link(issue_id, token, "invalid"))
        except InvalidTransition:
            return redirect(self._resident_link(issue_id, token, "already"))
        outcome = ("thanks" if result["status"] == "closed" else "reopened"
                   if result.get("escalated", True) else "reopened_at_top")
        return redirect(self._resident_link(issue_id, token, outcome))

    # --------------------------------------------------------- the operators

    @http("GET", "/ops")
    def ops_page(self, request):
        session, principal = self._operator(request)
        from whistle.status_cli import gather

        report = gather(self.config)
        return self._page(request, "ops.html", session, principal, report=report,
                          lines=views.flow_lines(self.flow.after(0, 100), self._tz()))

    @http("GET", "/ops/flow.json")
    def ops_flow(self, request):
        self._operator(request)
        try:
            after = int(request.args.get("after", "0"))
        except ValueError:
            after = 0
        return json_response({"lines": views.flow_lines(self.flow.after(after), self._tz())})

    # ------------------------------------------------------------ internals

    def _session(self, request) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise Unauthorized("sign in first")
        return session

    def _principal(self, request, session: Session, action: str | None = None,
                   issue_id: str | None = None, bucket: str = READ) -> Principal:
        """The session's token through the API's own guard: verified, not revoked, within
        its rate limit, and (a write) audited. A refused token ends the session."""
        try:
            return self.guard.check(SessionRequest(request, session.token), action=action,
                                    issue_id=issue_id, bucket=bucket)
        except Unauthorized:
            self.sessions.delete(session.sid)
            raise

    def _signed_in(self, request, **check) -> tuple[Session, Principal]:
        session = self._session(request)
        return session, self._principal(request, session, **check)

    def _desk(self, request, **check) -> tuple[Session, Principal]:
        session, principal = self._signed_in(request, **check)
        authz.must_be_desk(principal)
        return session, principal

    def _operator(self, request) -> tuple[Session, Principal]:
        session, principal = self._desk(request)
        if principal.communities is not None:
            raise Forbidden("the operator's view covers every community: an unscoped desk token")
        return session, principal

    def _check_form(self, request, session: Session) -> dict:
        form = request.form.to_dict()
        for name in LIST_FIELDS:  # checkboxes: every one ticked, not the first alone
            if name in request.form:
                form[name] = request.form.getlist(name)
        if not session.csrf_ok(form.pop("csrf", None)):
            raise FormExpired("the form's CSRF secret does not match the session")
        return form

    def _desk_action(self, request, issue_id: str, action: str, call, back: str | None = None,
                     form_key: str | None = None):
        """A desk's write from the issue page (or the triage queue: ``back``).
        ``form_key`` names the form on the issue page (the table's forms are named by
        their action): a field it got wrong is shown beside that field (``_acted``)."""
        session, principal = self._desk(request, action=action, issue_id=issue_id)
        form = self._check_form(request, session)
        if back:  # the triage queue: which issue went is said there
            return self._acted(lambda: call(session.token, form), f"{back}?issue={issue_id}",
                               _again(
                request, lambda status, **context: self._triage_page(
                    request, session, principal, status=status, here=back, **context),
                form, "triage_queue"), action)  # its buttons show no field: said at the top
        here = f"/desk/issues/{issue_id}"
        return self._acted(lambda: call(session.token, form), here, _again(
            request, lambda status, **context: self._issue_page(
                request, session, principal, issue_id, status=status, here=here, **context),
            form, form_key or action), action)

    def _desk_call(self, request, issue_id: str, action: str, method, body_of, **where):
        """:meth:`_desk_action` calling ``method(token, issue_id, body_of(form))``."""
        return self._desk_action(request, issue_id, action, lambda token, form: method(
            token, issue_id, body_of(form)), **where)

    def _agency_action(self, request, agency: str, issue_id: str, action: str, call,
                       form_key: str | None = None):
        """An agency's write: its own agency only (``shared.authz``), then the owning
        service decides again on the token (its assignment, its table task)."""
        session, principal = self._signed_in(request, action=action, issue_id=issue_id)
        form = self._check_form(request, session)
        authz.may_act_for_agency(principal, agency)
        page = request.args.get("page", "")  # back to the page the form was on
        back = f"/agency?page={page}" if page.isascii() and page.isdigit() else "/agency"
        return self._acted(lambda: call(session.token, form), back, _again(
            # ``acted_on``: the issue of the refused form, whose table tasks a refusal
            # names by their own words (views.refusal).
            request, lambda status, **context: self._workspace(
                request, session, principal, status=status, here="/agency",
                acted_on=issue_id, **context),
            form, form_key or action), action)

    def _acted(self, call, back: str, again, action: str):
        """Do it; back to the page with what happened (a redirect). 403 and 404 are their
        own pages: someone asked for what is not theirs (or not there). Any other
        refusal is the form's page drawn again (``again(status, message, errors)``):
        a 422 that names fields with each error beside its field, in the page's
        language, and the form as typed; another refusal said at the top. The reason
        never travels in the address: a ``?error=`` the page showed could be anyone's
        words in the desk's own red box, from a link sent to them.

        The owning service audits the write on its RPC (the same token: the staff
        member, the action, the real outcome), so once it has answered, this page's own
        entry (a 303 either way) is dropped: one entry per write. A refusal here (the
        session, the CSRF secret, another agency's form) or no answer keeps the page's."""
        try:
            self._rpc(call)
        except NoAnswer:
            raise
        except (WhistleError, RemoteError) as exc:
            self.guard.audited_elsewhere()
            # An agency's part withdrawn (rerouted) while its workspace was open: said on
            # the workspace, not "您无权查看或操作这项内容" as if it had asked for another's.
            withdrawn = isinstance(exc, Forbidden) and views.NO_ASSIGNMENT.fullmatch(exc.message)
            # 429 here is the service's own cooldown (a rating link just resent), said
            # on the page: the page's own rate limit is judged before the call.
            if isinstance(exc, WhistleError) and (exc.status in (400, 409, 422, 429)
                                                  or withdrawn):
                return again(exc.status, exc.message[:300],
                             exc.errors if isinstance(exc, InvalidPayload) else [])
            raise
        self.guard.audited_elsewhere()
        return redirect(f"{back}{'&' if '?' in back else '?'}done={action}")

    def _rpc(self, method, *args):
        """An RPC to the service that owns the data; an answer within ``RPC_TIMEOUT_S``
        or 503 (nameko's in-service proxy would otherwise wait for ever)."""
        with eventlet.Timeout(RPC_TIMEOUT_S, NoAnswer("a service did not answer in time")):
            return method(*args)

    def _page(self, request, template: str, session: Session, principal: Principal,
              status: int = 200, **context):
        return render(request, template, status=status, csrf=session.csrf, principal=principal,
                      desk=principal.is_desk,
                      operator=principal.is_desk and principal.communities is None,
                      now=utcnow(), tz=self._tz(), names=self.names, **context)

    def _signin_page(self, request, error: str | None = None, status: int = 200):
        csrf = secrets.token_urlsafe(24)
        response = render(request, "signin.html", status=status, signin_csrf=csrf, error=error)
        response.set_cookie(SIGNIN_CSRF_COOKIE, csrf, httponly=True, samesite="Strict",
                            path="/signin", secure=self._secure_cookies())
        return response

    def _resident_problem(self, request, exc: Exception):
        """An expired, reused or forged link: a clear page in the resident's language
        (the link's own ``lang``, else Chinese), never JSON."""
        expired = "expired" in str(exc)
        return render(request, "resident_error.html", status=410 if expired else 403,
                      title_key="link_expired_title" if expired else "link_invalid_title",
                      message_key="link_expired" if expired else "link_invalid")

    @staticmethod
    def _resident_link(issue_id: str, token: str, outcome: str) -> str:
        return f"/resident/{issue_id}?{urlencode({'token': token, 'rated': outcome})}"

    @staticmethod
    def _home_of(principal: Principal) -> str:
        return "/desk" if principal.is_desk else "/agency"

    @staticmethod
    def _scoped(principal: Principal, filters: dict) -> dict:
        """The board's filters narrowed to the desk's communities: ``shared.authz``'s
        list rule (another community is 403; none named means all of its own)."""
        try:
            asked = IssueFilter(**{k: v for k, v in filters.items()
                                   if k in ("status", "agency", "community")})
        except ValidationError as exc:  # an edited address: a 422 page, not a 500 and a trace
            raise InvalidPayload.from_validation_error(exc, "filter") from None
        authz.may_list_issues(principal, asked)
        if principal.communities is not None and "community" not in filters:
            return {**filters, "communities": sorted(principal.communities)}
        return filters

    @staticmethod
    def _board_filters(request) -> dict:
        """The board's filters in the address. One given twice is a 422 naming it, as the
        API's lists answer (``shared.web.query_parameters``): the first was used in
        silence, a board of urgent issues only for ``?priority=urgent&priority=high``."""
        repeated = [k for k in views.BOARD_FILTERS if len(request.args.getlist(k)) > 1]
        if repeated:
            raise InvalidPayload(f"invalid filter: {', '.join(repeated)}", [
                {"field": k, "type": "repeated", "message": "given more than once; give it once"}
                for k in repeated])
        return {k: v for k in ("status", "priority", "agency", "community")
                if (v := (request.args.get(k) or "").strip())}

    def _local_datetime(self, value: str | None) -> str:
        """A ``datetime-local`` input (no zone) in the desk's time zone, as ISO 8601."""
        if not value:
            return ""
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value  # the API says what is wrong with it
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(self._tz()))
        return moment.isoformat()

    def _secret(self) -> str:
        return cfg.get(self.config, cfg.SECRET)

    def _tz(self) -> str:
        return cfg.get(self.config, cfg.DISPLAY_TZ)

    def _secure_cookies(self) -> bool:
        return str(cfg.get(self.config, cfg.PUBLIC_URL)).startswith("https:")


STATUSES = tuple(s.value for s in IssueStatus)
# Form fields that are ticked boxes sharing one name (the table's agencies): a list.
LIST_FIELDS = ("agencies", "also", "moot")
PRIORITIES = ("urgent", "high", "normal", "complex")


def _route(form: dict) -> dict:
    """A triage or reroute form as routing's ``ChooseRoute`` body (blanks left out; the
    form's ``request_id`` makes a double click harmless; ``urgent``: ``yes`` or ``no``,
    blank for routing's default, anything else left for routing to refuse, named)."""
    body = {k: form[k].strip() for k in ("category", "lead", "reason", "request_id", "urgent")
            if (form.get(k) or "").strip()}
    if "urgent" in body:
        body["urgent"] = {"yes": True, "no": False}.get(body["urgent"], body["urgent"])
    if _codes(form.get("support")):
        body["support"] = _codes(form.get("support"))
    return body


def _recorded_rating(form: dict) -> dict:
    """The issue page's rating form as routing's ``RecordedRating`` (a choice left blank
    is left out: "required" beside it, not "not one of the choices")."""
    return {k: form[k].strip() for k in ("rating", "method", "comment")
            if (form.get(k) or "").strip()}


def _again(request, draw, form: dict | None = None, key: str | None = None):
    """How a refused form's page is drawn again (``draw(status, **context)``): the
    fields' errors beside the form ``key``'s fields, with ``form`` as typed; else (no
    fields, or a page without that form) the reason at the top."""
    def again(status: int, message: str, errors: list[dict]):
        if errors and key:
            # What the form does not show is said at the top, not counted ("1 field to
            # fix" with none marked said nothing); what was typed is kept either way.
            shown, unshown = _shown(request, errors, key)
            return draw(status, failed=key, form=form, errors=shown,
                        **({"error": unshown} if unshown else {}))
        return draw(status, error=message)
    return again


def _shown(request, errors: list[dict], key: str) -> tuple[dict[str, str], str | None]:
    """A service's 422 fields as the page shows them: by the form ``key``'s fields, in its
    language, and the words for the top of the page for those it does not show."""
    return views.split_errors(errors, key, views.Translator(reader_language(request)))


def _codes(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").replace("，", ",").split(",") if c.strip()]


def _agency_codes(chosen: list[str] | str | None) -> list[str]:
    """The table forms' agencies: the boxes ticked (each its code), or codes typed
    comma-separated by a script posting the form as it did before the boxes."""
    values = chosen if isinstance(chosen, list) else [chosen]
    return [code for value in values for code in _codes(value)]


def _next_deadline(assignment: dict) -> str | None:
    if assignment.get("status") == "assigned":
        return assignment.get("acknowledge_by")
    return assignment.get("resolve_by")
