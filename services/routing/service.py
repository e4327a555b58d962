"""routing: decide category, priority and agencies (精准派单), and keep them honest.

- Dispatch: rules (``RULES_FILE``, default the shipped ``rules.yaml``) decide the
  category, priority, lead and support agencies and their deadlines; routing
  publishes ``issue.dispatched``, which carries every assignment to agency.
- Duplicates (共性问题统筹): a same-category report from the same address or grid
  within the window joins the open issue instead (``merging.py``).
- Deadlines (三级吹哨): a watch escalates every missed deadline exactly once
  (``escalation.py``).
- The table (问题在桌面解决): convene, invite, check in, record and finish tasks
  (``table.py``).
- Triage (``needs_triage``): a report the classifier is unsure of waits for the desk,
  which routes it in one call; an urgent-looking one is dispatched to the best guess
  at once and flagged (``desk.py``).
- Reroute: the desk corrects a dispatched issue's category and agencies; every triage
  decision and reroute is kept as a labelled example (``corrections.py``).
- Explain a route without creating anything (classifier evidence included), and
  reload rules (and the model) without a restart.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from nameko.dependency_providers import Config
from nameko.timer import timer

from services.routing import desk, feedback, merging, table
from services.routing.classifier import ModelLoadError
from services.routing.corrections import correction_from
from services.routing.corrections_store import CorrectionsProvider, CorrectionStore
from services.routing.domain import RouteDecision, route_issue
from services.routing.escalation import escalate
from services.routing.explain import explanation, read_for_explain
from services.routing.model_provider import RoutingModel
from services.routing.reloads import FOLLOW_INTERVAL_S, MODEL, RULES, ReloadFollowing
from services.routing.rules import RulesError, RuleSet
from services.routing.rules_provider import ReloadableRules, reload_for_rpc, rules_provider_for
from shared import config as cfg
from shared.auth import (
    FeedbackGrant,
    Principal,
    Role,
    bearer_token,
    verify_resident_token,
)
from shared.authz import (
    judge_unknown,
    load_judged,
    mask_assignment_notes,
    mask_task_notes,
    may_rate,
    may_read_issue,
    may_record_rating,
    must_be_desk,
    resident_view,
)
from shared.contracts import (
    CompleteTableTask,
    ConveneTable,
    DeadlineKind,
    ExplainRoute,
    Feedback,
    FeedbackForm,
    InviteToTable,
    IssueReceived,
    IssueResolved,
    Rating,
    RecordedRating,
    RecordTableTask,
    Reroute,
    RouteCorrected,
    TriageDecision,
    utcnow,
    view_language,
)
from shared.errors import EXPECTED_ERRORS, Forbidden, InvalidPayload, NotFound, Unavailable
from shared.guard import Guard
from shared.issue import Assignment, Deadline, IssueRecord, public_view
from shared.logging import WorkerLogger
from shared.messaging import EventBus, subscribe
from shared.rpc import rpc
from shared.store import Read, Store
from shared.web import health_report, http, read_json, read_json_data, validate

DEADLINE_WATCH_INTERVAL_S = 1.0
# A report's would-be primary can close while it is being merged; look again this
# many times (each look is a fresh read of who owns the duplicate buckets).
MAX_MERGE_TRIES = 3


def plan_assignments(decision: RouteDecision, rules: RuleSet, now: datetime) -> list[Assignment]:
    return desk.assignments_of(decision.assignments, rules, now)


def dispatch_events(record: IssueRecord, cause: IssueReceived, now: datetime):
    """``issue.dispatched``, carrying every assignment of the dispatch. It is what each
    agency receives its 派单 by: ``assignment.created`` is for assignments added to an
    issue already dispatched (a table invitation, a reroute), so a dispatch is one
    message to agency, whatever the number of agencies."""
    return [desk.dispatched_event(record, now, cause)]


# What each desk decision reads, and the pure function that applies it (desk.py).
DESK_DECISIONS = {"triage": (TriageDecision, desk.triage), "reroute": (Reroute, desk.reroute)}


class RoutingService:
    name = "routing"

    rules: RuleSet = ReloadableRules()
    model: RoutingModel = RoutingModel()
    reloads: ReloadFollowing = ReloadFollowing()
    corrections: CorrectionStore = CorrectionsProvider()
    store = Store()
    bus = EventBus()
    log = WorkerLogger()
    config = Config()
    guard = Guard()

    # ------------------------------------------------------------- dispatch

    @subscribe(IssueReceived)
    def route_issue(self, event: IssueReceived) -> None:
        now = utcnow()
        decision = self._decide(event.description, event.category, now)
        read = None  # the report's own record, read with the duplicate buckets' owner
        # An unsure route does not merge: its category is a guess.
        if (event.allow_merge and decision.category_source != "fallback"
                and decision.triage is None):
            for _ in range(MAX_MERGE_TRIES):
                primary, read = self._open_duplicate_of(event, decision.category)
                if primary is None:
                    break
                if self._merge(event, primary, decision, now):
                    return

        def routed(record: IssueRecord):
            new = desk.first_route(record, decision, self.rules, now)
            if decision.held:
                return new, {}
            return new, self.bus.stage(*dispatch_events(new, event, now))

        applied = self.store.apply(event.issue_id, event.event_id, routed, self.name, read=read)
        self.bus.publish(applied.outbox)
        if decision.held:
            self.log.info("issue_needs_triage", issue_id=event.issue_id,
                          suggestions=[c for c, _ in decision.triage.suggestions],
                          duplicate=not applied.changed)
            return
        self.log.info("issue_routed", issue_id=event.issue_id, category=decision.category,
                      priority=decision.priority.value, rule=decision.rule,
                      source=decision.category_source, flagged=decision.triage is not None,
                      agencies=[p.agency for p in decision.assignments],
                      duplicate=not applied.changed)

    def _decide(self, text: str, category: str | None, now: datetime,
                explaining: bool = False) -> RouteDecision:
        """The domain's decision, with the loaded model's reading of the text if any
        (``explaining``: as explain shows it, ``explain.read_for_explain``)."""
        model = self.model.classifier
        classification = (None if model is None else read_for_explain(model, text)
                          if explaining else model.classify(text))
        return route_issue(text, category, self.rules, now, classification,
                           self.model.threshold)

    def _open_duplicate_of(self, event: IssueReceived, category: str
                           ) -> tuple[IssueRecord | None, Read]:
        """The open issue this report duplicates, claiming the buckets if there is none;
        and the report's own record, read in the same round trip as the claim."""
        keys = [self.store.keys.dedupe(c, scope)
                for c, scope in merging.buckets(category, event.location)]
        ttl = int(self.rules.merging.window.total_seconds())
        owner, read = self.store.claim_buckets_and_read(keys, event.issue_id, ttl,
                                                        event_id=event.event_id)
        for _ in range(MAX_MERGE_TRIES):
            if owner == event.issue_id:
                return None, read
            primary = self.store.get(owner)
            if merging.can_join(primary):
                return primary, read
            # Closed: take its buckets over, unless another report just did (then that
            # one is the open issue to join).
            owner = self.store.claim_buckets(keys, event.issue_id, ttl, replacing=owner)
        raise Unavailable(f"duplicate buckets of {event.issue_id} keep changing hands")

    def _merge(self, event: IssueReceived, primary: IssueRecord, decision: RouteDecision,
               now: datetime) -> bool:
        """Fold the report into ``primary``; False if ``primary`` closed meanwhile."""
        category = decision.category
        try:
            self.store.apply(primary.issue_id, f"merge:{event.event_id}",
                             lambda r: (merging.join(r, event.issue_id, now), {}), self.name)
        except merging.PrimaryClosed:
            return False
        applied = self.store.apply(
            event.issue_id, event.event_id,
            lambda r: self._staged(merging.fold(r, primary, category, event, now,
                                                own_priority=decision.priority,
                                                routing=desk.routing_of(decision))), self.name)
        self.bus.publish(applied.outbox)
        self.log.info("issue_merged", issue_id=event.issue_id, into=primary.issue_id,
                      category=category)
        return True

    @subscribe(RouteCorrected)
    def keep_correction(self, event: RouteCorrected) -> None:
        """Keep a desk decision as a labelled example (once per event: the store's
        write is idempotent, so a redelivered event changes nothing)."""
        record = self.store.get(event.issue_id)
        fresh = self.corrections.add(correction_from(event, record,
                                                     self.store.contact(event.issue_id)))
        self.log.info("correction_kept", issue_id=event.issue_id, source=event.source,
                      category=event.category, duplicate=not fresh)

    # ------------------------------------------------------------ deadlines

    @timer(interval=DEADLINE_WATCH_INTERVAL_S)
    def watch_deadlines(self) -> None:
        """Escalate every missed deadline; runs on every instance, escalates once."""
        try:
            self._escalate_missed(utcnow())
        except Unavailable as exc:
            # Redis is down: the deadlines are still in it, and the next tick after it
            # is back escalates them (each once). A warning, not a traceback a second.
            self.log.warning("deadline_watch_waiting_for_store", reason=str(exc))

    def _escalate_missed(self, now: datetime) -> None:
        for member, score in self.store.due_deadlines(now.timestamp()):
            deadline = Deadline.from_member(member, score)
            if deadline.kind is DeadlineKind.feedback:
                def passed(r, d=deadline):
                    return self._staged(feedback.close_unrated(r, d, now))
            else:
                def passed(r, d=deadline):
                    return self._staged(escalate(r, d, self.rules, now))
            applied = self.store.apply(deadline.issue_id, deadline.escalation_id, passed,
                                       self.name)
            self.bus.publish(applied.outbox)
            if applied.outbox:
                self.log.warning("deadline_passed", issue_id=deadline.issue_id,
                                 agency=deadline.agency, deadline=deadline.kind.value,
                                 level=applied.record.escalation_level.value)

    # ---------------------------------------------------- 民事民评 (rating)

    @subscribe(IssueResolved)
    def await_rating(self, event: IssueResolved) -> None:
        """Every part is done: open the resident's rating window."""
        window = timedelta(seconds=int(cfg.get(self.config, cfg.RATING_WINDOW_S)))
        self.store.apply(event.issue_id, event.event_id,
                         lambda r: (feedback.await_rating(r, event, window), {}), self.name)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def submit_feedback(self, issue_id: str, payload: dict) -> dict:
        """A resident rates the outcome with the token from their rating request.

        ``issue_id`` is the resident's own reference (a merged report rates the issue
        it joined).
        """
        body = validate(Feedback, payload)
        principal = verify_resident_token(body.token, cfg.get(self.config, cfg.SECRET))
        self.guard.record(principal, "issue.rate", issue_id)
        return self._rate(may_rate(principal, issue_id), body.rating, body.comment)

    @http("POST", "/issues/<issue_id>/feedback", expected_exceptions=EXPECTED_ERRORS)
    def submit_feedback_http(self, request, issue_id):
        # The rating link carries the token in its query string; a body may carry it too.
        # A caller known from the request itself (a staff token, a resident's link in the
        # header or query) is judged before the body is read, so a refused one gets 403,
        # never a 400/422. Only an anonymous request's body is looked into, for its token
        # alone (a body that is not JSON is 400 then: there is no token to find), and the
        # rest is validated once that token may rate.
        principal = self.guard.check(request, "issue.rate", issue_id, anonymous=True)
        if principal.role is not Role.anonymous:
            may_rate(principal, issue_id)
        data = read_json_data(request)
        if principal.role is Role.anonymous:
            token = data.get("token") if isinstance(data, dict) else None
            if isinstance(token, str) and token:
                principal = self.guard.check_token(token, "issue.rate", issue_id,
                                                   address=request.remote_addr)
        grant = may_rate(principal, issue_id)
        body = validate(FeedbackForm, data)
        return self._rate(grant, body.rating, body.comment)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def record_rating(self, token: str, issue_id: str, payload: dict) -> dict:
        """The desk records the answer of a resident it called back or visited (电话回访),
        on their behalf: ``issue_id`` is the resident's own reference (a merged
        neighbour's rates the issue it joined, as their link would). Desk only, a scoped
        desk in its communities; the same effects and rules as the resident's own rating."""
        staff = self._desk(token, "issue.record_rating", issue_id)
        own, _ = load_judged(self.store.get, issue_id, lambda r: may_record_rating(staff, r))
        body = validate(RecordedRating, payload)
        work = self.store.get(own.merged_into) if own.merged_into else own
        return self._rate(feedback.desk_grant(own, work), body.rating, body.comment,
                          feedback.OnBehalf(staff_id=staff.staff_id, method=body.method))

    @http("POST", "/issues/<issue_id>/rating", expected_exceptions=EXPECTED_ERRORS)
    def record_rating_http(self, request, issue_id):
        staff, token = self._staff_request(request, "issue.record_rating", issue_id)
        must_be_desk(staff)  # strangers get 401/403 before the body is read
        if staff.communities is not None:
            load_judged(self.store.get, issue_id, lambda r: may_record_rating(staff, r))
        return self.record_rating(token, issue_id, read_json(request, RecordedRating)
                                  .model_dump(mode="json", exclude_none=True))

    def _rate(self, grant: FeedbackGrant, rating: Rating, comment: str | None,
              on_behalf: feedback.OnBehalf | None = None) -> dict:
        now = utcnow()
        # The rater's own name is masked in their comment as their phone is.
        names = [(self.store.contact(grant.reporter_issue_id) or {}).get("name")] \
            if comment else []
        levels = []  # the level before the rating, to say whether a reopening went up

        def rated(record: IssueRecord):
            levels[:] = [record.escalation_level]
            return self._staged(feedback.rate(record, grant, rating, comment, self.rules, now,
                                              names, on_behalf))

        applied = self.store.apply(grant.issue_id, None, rated, self.name)
        self.bus.publish(applied.outbox)
        self.log.info("issue_rated", issue_id=grant.issue_id, rating=rating.value,
                      status=applied.record.status.value,
                      **({"recorded_by": on_behalf.staff_id, "method": on_behalf.method.value}
                         if on_behalf else {}))
        return {"issue_id": grant.issue_id, "status": applied.record.status.value,
                "escalation_level": applied.record.escalation_level.value,
                # Reopened at the top level already: nothing went up (feedback.reopen).
                "escalated": bool(levels) and applied.record.escalation_level is not levels[0],
                "reopen_count": applied.record.reopen_count}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def resident_view(self, issue_id: str, token: str, lang: str | None = None) -> dict:
        """What the resident holding ``token`` (a progress or rating link) may see of
        their report: ``shared.authz``'s resident view, as the API gives it, in ``lang``
        (``zh`` or ``en``; unset, the report's own language)."""
        lang = view_language(lang)
        principal = verify_resident_token(token or "", cfg.get(self.config, cfg.SECRET))
        own = self.store.get(issue_id)
        may_read_issue(principal, own, issue_id)
        primary = self.store.get(own.merged_into) if own.merged_into else None
        return resident_view(own, self.store.contact(issue_id), primary, principal.rates,
                             lang)

    # ------------------------------------------------------------ the table

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def convene_table(self, token: str, issue_id: str, payload: dict) -> dict:
        staff = self._desk(token, "table.convene", issue_id)
        self._may_touch(staff, issue_id)
        body = validate(ConveneTable, payload)
        return self._change_as(staff, issue_id, lambda r, now: table.convene(
            r, body.meets_at, body.place, body.agencies, self.rules, now))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def invite_to_table(self, token: str, issue_id: str, payload: dict) -> dict:
        staff = self._principal(token, "table.invite", issue_id)
        self._may_touch(staff, issue_id)
        body = validate(InviteToTable, payload)
        return self._change_as(staff, issue_id, lambda r, now: table.invite(
            r, staff.agency, body.agencies, self.rules, now))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def check_in_at_table(self, token: str, issue_id: str) -> dict:
        staff = self._principal(token, "table.check_in", issue_id)
        return self._change_as(staff, issue_id, lambda r, now: table.check_in(
            r, staff.agency, staff.staff_id, self.rules, now))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def record_table_task(self, token: str, issue_id: str, payload: dict) -> dict:
        staff = self._principal(token, "table.record_task", issue_id)
        self._may_touch(staff, issue_id)
        body = validate(RecordTableTask, payload)
        return self._change_as(staff, issue_id, lambda r, now: table.record_task(
            r, staff.agency, body.agency, body.description, body.due, self.rules, now))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def complete_table_task(self, token: str, issue_id: str, task_id: str, payload: dict) -> dict:
        staff = self._principal(token, "table.complete_task", issue_id)
        self._may_touch(staff, issue_id)
        body = validate(CompleteTableTask, payload)
        return self._change_as(staff, issue_id, lambda r, now: table.complete_task(
            r, staff.agency, staff.staff_id, task_id, body.note, self.rules, now))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def close_table_task(self, token: str, issue_id: str, task_id: str, payload: dict) -> dict:
        """The desk closes an agency's table task, with a note (desk only, within its
        communities; audited; a retried close changes nothing)."""
        staff = self._desk(token, "table.close_task", issue_id)
        self._may_touch(staff, issue_id)
        body = validate(CompleteTableTask, payload)
        return self._change_as(staff, issue_id, lambda r, now: table.close_task(
            r, staff.staff_id, task_id, body.note, self.rules, now))

    @http("POST", "/issues/<issue_id>/table", expected_exceptions=EXPECTED_ERRORS)
    def convene_table_http(self, request, issue_id):
        token, body = self._caller_then_body(request, issue_id, ConveneTable, desk=True)
        return 201, self.convene_table(token, issue_id, body)

    @http("POST", "/issues/<issue_id>/table/agencies", expected_exceptions=EXPECTED_ERRORS)
    def invite_to_table_http(self, request, issue_id):
        token, body = self._caller_then_body(request, issue_id, InviteToTable)
        return self.invite_to_table(token, issue_id, body)

    @http("POST", "/issues/<issue_id>/table/check-in", expected_exceptions=EXPECTED_ERRORS)
    def check_in_at_table_http(self, request, issue_id):
        staff, token = self._staff_request(request, "issue.change", issue_id)
        self._may_touch(staff, issue_id)
        return self.check_in_at_table(token, issue_id)

    @http("POST", "/issues/<issue_id>/table/tasks", expected_exceptions=EXPECTED_ERRORS)
    def record_table_task_http(self, request, issue_id):
        token, body = self._caller_then_body(request, issue_id, RecordTableTask)
        return 201, self.record_table_task(token, issue_id, body)

    @http("POST", "/issues/<issue_id>/table/tasks/<task_id>/done",
          expected_exceptions=EXPECTED_ERRORS)
    def complete_table_task_http(self, request, issue_id, task_id):
        token, body = self._caller_then_body(request, issue_id, CompleteTableTask)
        return self.complete_table_task(token, issue_id, task_id, body)

    @http("POST", "/issues/<issue_id>/table/tasks/<task_id>/close",
          expected_exceptions=EXPECTED_ERRORS)
    def close_table_task_http(self, request, issue_id, task_id):
        token, body = self._caller_then_body(request, issue_id, CompleteTableTask, desk=True)
        return self.close_table_task(token, issue_id, task_id, body)

    # ---------------------------------------------------------------- split

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def split_issue(self, token: str, issue_id: str) -> dict:
        """Undo a wrong merge: the report is routed on its own again."""
        staff = self._desk(token, "issue.split", issue_id)
        now = utcnow()
        # a desk scoped to some communities acts only there (and learns nothing elsewhere)
        merged, _ = load_judged(self.store.get, issue_id, lambda r: may_read_issue(staff, r))
        merging.must_be_merged(merged)
        has_contact = bool(self.store.contact(issue_id))

        def split(record):
            new, again = merging.unfold(record, has_contact, now)
            return new, self.bus.stage(again)

        # The issue it joined first: the split is refused there (its reporter rated it, or
        # it closed) in the same write as takes the reporter off, so a rating landing at
        # the same moment is either refused (no longer a reporter) or refuses the split.
        # Nothing is routed again before that: the report is unfolded only then (a crash
        # in between leaves it merged, and splitting it again finishes the split).
        self.store.apply(merged.merged_into, None,
                         lambda r: (merging.leave(r, issue_id, now), {}), self.name)
        applied = self.store.apply(issue_id, None, split, self.name)
        self.bus.publish(applied.outbox)
        return {"issue_id": issue_id, "status": applied.record.status.value}

    @http("POST", "/issues/<issue_id>/split", expected_exceptions=EXPECTED_ERRORS)
    def split_issue_http(self, request, issue_id):
        return self.split_issue(self._token(request, "issue.change", issue_id), issue_id)

    # ---------------------------------------------------------------- rules

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def explain_route(self, token: str, payload: dict) -> dict:
        """What routing would decide for a text, and why, without creating anything.

        Desk staff only: it shows the rules' and the model's inner workings.
        """
        self._desk(token)
        request = validate(ExplainRoute, payload)
        if request.category is not None:  # the desk asks "and as this category?"
            desk.require_known_category(request.category, self.rules)
        decision = self._decide(request.text, request.category, utcnow(), explaining=True)
        return explanation(decision, self.rules, self.model.threshold)

    @http("POST", "/routing/explain", expected_exceptions=EXPECTED_ERRORS)
    def explain_route_http(self, request):
        token = self._token(request)
        self._desk(token)  # before reading the body: strangers learn nothing
        return self.explain_route(token, read_json(request, ExplainRoute).model_dump())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def reload_rules(self) -> dict:
        """Read the configured rules file again (``RULES_FILE``; the caller names no path:
        which file routing reads is the deployment's decision, not an RPC caller's).
        Every other routing process follows within ``FOLLOW_INTERVAL_S`` (``reloads``)."""
        with self.reloads.lock:
            provider = rules_provider_for(self.name)
            loaded = reload_for_rpc(provider)
            return {**loaded, "other_processes_told":
                    self.reloads.announce(RULES, provider.loaded.digest)}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def reload_model(self) -> dict:
        """Load the configured model artefact again (after ``whistle routing train``).
        Every other routing process follows within ``FOLLOW_INTERVAL_S`` (``reloads``)."""
        with self.reloads.lock:
            try:
                version = self.model.reload()
            except ModelLoadError as exc:
                raise InvalidPayload(f"model not reloaded, the old one stays in force: {exc}", [
                    {"field": cfg.ROUTING_MODEL, "message": str(exc), "type": "model"}]) from None
            return {"model_version": version,
                    "other_processes_told": self.reloads.announce(MODEL, version)}

    @timer(interval=FOLLOW_INTERVAL_S)
    def follow_reloads(self) -> None:
        """Reload what another routing process was asked to reload (``reloads``)."""
        rules = rules_provider_for(self.name)
        with self.reloads.lock:
            for what in self.reloads.due({MODEL: self.model.version,
                                          RULES: rules.loaded.digest}):
                try:
                    if what == MODEL:
                        self.log.info("reload_followed", what=what,
                                      held=self.model.reload())
                    else:
                        rules.reload()
                        self.log.info("reload_followed", what=what, held=rules.loaded.digest)
                except (ModelLoadError, RulesError, OSError) as exc:
                    # The old one stays in force here; the process that was asked loaded
                    # its copy, so this one's differs: say so loudly.
                    self.log.error("reload_not_followed", what=what, reason=str(exc))

    # ------------------------------------------------- triage and reroute

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def triage_issue(self, token: str, issue_id: str, payload: dict) -> dict:
        """The desk routes an issue routing was unsure of, in one call (see desk.triage)."""
        return self._desk_change("triage", token, issue_id, payload)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def reroute_issue(self, token: str, issue_id: str, payload: dict) -> dict:
        """The desk corrects a dispatched issue's category, lead and support."""
        return self._desk_change("reroute", token, issue_id, payload)

    @http("POST", "/issues/<issue_id>/triage", expected_exceptions=EXPECTED_ERRORS)
    def triage_issue_http(self, request, issue_id):
        return self._desk_http(request, issue_id, TriageDecision, self.triage_issue)

    @http("POST", "/issues/<issue_id>/reroute", expected_exceptions=EXPECTED_ERRORS)
    def reroute_issue_http(self, request, issue_id):
        return self._desk_http(request, issue_id, Reroute, self.reroute_issue)

    def _desk_http(self, request, issue_id: str, model, method) -> dict:
        token, body = self._caller_then_body(request, issue_id, model, desk=True,
                                             exclude_none=True)
        return method(token, issue_id, body)

    def _caller_then_body(self, request, issue_id: str, model, desk: bool = False,
                          **dump) -> tuple[str | None, dict]:
        """An issue write's staff token (``desk``: the desk's), then its body: the caller
        is checked first, so strangers get 401/403 and learn nothing from a 400/422. A
        caller who may not touch this issue at all (a desk outside its communities, an
        agency with no part in it) is refused here too, before the body."""
        staff, token = self._staff_request(request, "issue.change", issue_id)
        if desk:
            must_be_desk(staff)
        self._may_touch(staff, issue_id)
        return token, read_json(request, model).model_dump(**dump)

    def _may_touch(self, staff: Principal, issue_id: str) -> None:
        """A caller who may not touch the issue at all is refused, whether or not it
        exists (``shared.authz.load_judged``); the unscoped desk reads every issue.
        Before the body, over RPC as over HTTP (:meth:`_caller_then_body`): a desk scoped
        elsewhere, or an agency with no part, learns nothing of the issue from an
        ``InvalidPayload``. The change itself judges again, in its atomic write."""
        if not (staff.is_desk and staff.communities is None):
            load_judged(self.store.get, issue_id, lambda r: may_read_issue(staff, r))

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)

    # ------------------------------------------------------------ internals

    def _desk_change(self, source: str, token: str, issue_id: str, payload: dict) -> dict:
        """Apply a desk decision once (per ``request_id`` when given), publish it, keep
        it as a labelled example, and answer the issue as the desk sees it."""
        staff = self._desk(token, f"issue.{source}", issue_id)
        # a desk scoped to some communities acts only there, and learns nothing elsewhere
        # (not even what is wrong with its body): judged before the body is
        self._may_touch(staff, issue_id)
        model, decide = DESK_DECISIONS[source]
        body = validate(model, payload)
        reason = body.reason
        now = utcnow()
        outcome: list[desk.DeskChange | None] = []

        before: list[str | None] = []

        def decided(record: IssueRecord):
            before[:] = [record.category]
            outcome[:] = [decide(record, body, reason, staff.staff_id, self.rules, now)]
            if outcome[0] is None:
                return record, {}
            return outcome[0].record, self.bus.stage(*outcome[0].events)

        event_id = f"{source}:{body.request_id}" if body.request_id else None
        applied = self.store.apply(issue_id, event_id, decided, self.name)
        self.bus.publish(applied.outbox)
        done = outcome[0] if outcome and applied.changed else None
        if done is not None:
            self._follow_category(applied.record, before[0], now)
        self.log.info("issue_triaged" if source == "triage" else "issue_rerouted",
                      issue_id=issue_id, staff_id=staff.staff_id,
                      category=applied.record.category, changed=done is not None)
        view = public_view(applied.record, None)
        view.pop("contact", None)
        return view

    def _follow_category(self, record: IssueRecord, was: str | None, now: datetime) -> None:
        """The desk decided the issue's category (triage, reroute): its duplicate buckets
        follow, for what is left of the merging window. A neighbour's report of the old
        category merged into an issue that was no longer that problem, and one of the new
        category opened a second issue beside it; an unsure report, triaged, took none."""
        if record.status not in merging.OPEN_STATUSES or record.category is None:
            return
        left = self.rules.merging.window - (now - record.received_at)
        if left.total_seconds() <= 0:
            return
        def keys(category: str | None) -> list[str]:
            return [] if category is None else [
                self.store.keys.dedupe(c, scope)
                for c, scope in merging.buckets(category, record.location)]
        self.store.move_buckets(keys(was) if was != record.category else [],
                                keys(record.category), record.issue_id,
                                left.total_seconds() * 1000)

    def _change_as(self, staff: Principal, issue_id: str, change) -> dict:
        """:meth:`_change`, once ``staff`` may act on the issue: a desk scoped to some
        communities acts only there (403 elsewhere), an agency only where it has a part."""
        def allowed(record: IssueRecord, now: datetime):
            may_read_issue(staff, record)
            return change(record, now)
        try:
            return self._change(issue_id, allowed, staff)
        except NotFound:  # an unknown issue: refused as one it has no part in, if it would be
            judge_unknown(issue_id, lambda r: may_read_issue(staff, r))
            raise

    def _change(self, issue_id: str, change, staff: Principal | None = None) -> dict:
        """Apply ``change`` and answer the table and the assignments; to agency staff with
        the notes and tasks masked as ``GET /issues/{id}`` shows them to an agency (the
        resident's and the merged neighbours' names, phones, emails)."""
        now = utcnow()
        applied = self.store.apply(issue_id, None, lambda r: self._staged(change(r, now)),
                                   self.name)
        self.bus.publish(applied.outbox)
        answer = applied.record.model_dump(mode="json", include={
            "issue_id", "status", "table", "assignments", "escalation_level"})
        if staff is not None and staff.role is Role.agency:
            names = self.store.residents_names([applied.record])[issue_id]
            for assignment in answer["assignments"]:
                mask_assignment_notes(assignment, names)
            mask_task_notes(answer["table"], names)
        return answer

    def _staged(self, result):
        record, events = result
        return record, self.bus.stage(*events)

    def _principal(self, token: str | None, action: str | None = None,
                   issue_id: str | None = None) -> Principal:
        """The staff member a token names (verified, not revoked); with ``action``, their
        write is audited."""
        return self.guard.staff(token, action, issue_id)

    def _desk(self, token: str | None, action: str | None = None,
              issue_id: str | None = None) -> Principal:
        principal = self._principal(token, action, issue_id)
        must_be_desk(principal)
        return principal

    def _token(self, request, action: str | None = None, issue_id: str | None = None
               ) -> str | None:
        """A request's staff token, after the guard (revocation, rate limit; ``action``: a
        write, audited): the RPC method it is handed to decides what that staff member
        may do."""
        return self._staff_request(request, action, issue_id)[1]

    def _staff_request(self, request, action: str | None = None, issue_id: str | None = None
                       ) -> tuple[Principal, str | None]:
        """:meth:`_token`, with the staff member it names."""
        principal = self.guard.check(request, action, issue_id)
        if not principal.is_staff:
            raise Forbidden("only desk or agency staff can do this")
        return principal, bearer_token(request.headers.get("Authorization"))
