"""The desk's hand on routing: triage and reroute. Pure: no nameko, no Redis.

- :func:`first_route`: what routing does with a new report, given the domain's
  decision: dispatch it, hold it for triage (``needs_triage``), or dispatch it to
  the best guess and flag it (urgent but unsure).
- :func:`triage`: the desk chooses the route of a report routing was unsure of.
  A held issue is dispatched normally (``issue.dispatched``); a flagged one keeps
  its agencies if the desk agrees, or is rerouted if not.
- :func:`reroute`: the desk corrects a dispatched issue: agencies no longer
  involved are withdrawn (``assignment.withdrawn`` each), new ones assigned
  (``assignment.created`` each, fresh deadlines), and the resident is told once
  (``issue.rerouted``). A request that changes nothing changes nothing.

Every desk decision also announces ``route.corrected``, committed with it: routing
keeps it as a labelled example (:class:`~services.routing.corrections.Correction`)
for retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.routing.domain import RouteDecision, category_priority, plan_route
from services.routing.rules import RuleSet
from services.routing.table import seat_rerouted
from shared.contracts import (
    AgencyRef,
    AssignmentCreated,
    AssignmentWithdrawn,
    ChooseRoute,
    Event,
    IssueDispatched,
    IssueRerouted,
    IssueStatus,
    Priority,
    Role,
    RouteCorrected,
)
from shared.errors import InvalidPayload, InvalidTransition
from shared.issue import (
    Assignment,
    IssueRecord,
    Routing,
    Suggestion,
    TriageState,
    dispatch,
    hold_for_triage,
    settle_triage,
)
from shared.issue import reroute as reroute_record

DESK_SOURCE = "desk"  # Routing.category_source of a route the desk chose


def routing_of(decision: RouteDecision) -> Routing:
    """What the issue keeps of the decision: the rule, keywords, who chose, how sure."""
    classification = decision.classification
    confidence = None
    if classification is not None:
        confidence = dict(classification.top).get(decision.category)
    return Routing(rule=decision.rule, keywords=list(decision.keywords),
                   category_source=decision.category_source,
                   model_version=classification.model_version if classification else None,
                   confidence=confidence)


def triage_state(decision: RouteDecision, now: datetime) -> TriageState | None:
    if decision.triage is None:
        return None
    return TriageState(
        held=decision.triage.hold, reason=decision.triage.reason, flagged_at=now,
        urgent=bool(decision.classification and decision.classification.urgent),
        suggestions=[Suggestion(category=c, probability=round(p, 4))
                     for c, p in decision.triage.suggestions])


def assignments_of(planned, rules: RuleSet, now: datetime) -> list[Assignment]:
    """Planned assignments (domain) as the issue's assignments, with both names."""
    return [
        Assignment(agency=p.agency, agency_name=p.agency_name,
                   agency_name_en=rules.agency(p.agency).name_en,
                   sector=p.sector, role=p.role, assigned_at=now,
                   acknowledge_by=p.acknowledge_by, resolve_by=p.resolve_by)
        for p in planned
    ]


def first_route(record: IssueRecord, decision: RouteDecision, rules: RuleSet,
                now: datetime) -> IssueRecord:
    """A new report's first route: held for triage, or dispatched (flagged if unsure)."""
    routing, triage = routing_of(decision), triage_state(decision, now)
    if decision.held:
        assert triage is not None
        return hold_for_triage(record, routing, triage, now)
    new = dispatch(record, decision.category, decision.priority, routing,
                   assignments_of(decision.assignments, rules, now), now, fresh=True)
    if triage is not None:
        new.triage = triage
        new.step(now, "routing", "flagged_for_triage",
                 f"urgent but unsure, dispatched to the best guess {decision.category}; "
                 f"{triage.reason}")
    return new


def dispatched_event(record: IssueRecord, now: datetime,
                     cause: Event | None = None) -> IssueDispatched:
    """``issue.dispatched`` for the record as dispatched: how every agency gets its 派单."""
    fields = dict(occurred_at=now, category=record.category, priority=record.priority,
                  assignments=[a.summary() for a in record.assignments])
    if cause is not None:
        return cause.caused(IssueDispatched, **fields)
    return IssueDispatched(trace_id=record.trace_id, issue_id=record.issue_id, **fields)


# ----------------------------------------------------------- the desk's route


@dataclass(frozen=True)
class DeskRoute:
    """A route the desk chose, worked out against the rules."""

    category: str
    priority: Priority
    routing: Routing
    assignments: list[Assignment]

    @property
    def lead(self) -> str:
        return next(a.agency for a in self.assignments if a.role is Role.lead)

    @property
    def support(self) -> list[str]:
        return [a.agency for a in self.assignments if a.role is Role.support]

    @property
    def urgent(self) -> bool:
        return self.priority is Priority.urgent


def require_known_category(category: str, rules: RuleSet) -> None:
    """Raises :class:`InvalidPayload` naming ``category`` when the rules do not know it:
    routing would otherwise take it as no category at all, in silence."""
    known = rules.category_names()
    if category not in known:
        raise InvalidPayload(f"unknown category {category!r}", [{
            "field": "category", "type": "unknown",
            "message": f"must be one of {', '.join(known)}"}])


def desk_route(body: ChooseRoute, rules: RuleSet, why: str, now: datetime) -> DeskRoute:
    """The desk's choice as a route: its category's rule, with the desk's overrides.

    Raises :class:`InvalidPayload` naming the field for an unknown category or agency,
    or a lead also listed as support.
    """
    require_known_category(body.category, rules)
    for field, agencies in (("lead", [body.lead] if body.lead else []),
                            ("support", body.support or [])):
        unknown = [a for a in agencies if a not in rules.agencies]
        if unknown:
            raise InvalidPayload(f"unknown agency {unknown[0]!r} in {field}", [{
                "field": field, "type": "unknown",
                "message": f"unknown agency {unknown[0]!r}; agencies: "
                           f"{', '.join(rules.agencies)}"}])
    # The lead is the desk's, or (unset) the category's rule's: a support naming the rule's
    # lead was dropped in silence, where the same route with that lead named was refused.
    lead = body.lead or (rules.rule(body.category).lead if rules.has_rule(body.category)
                         else rules.fallback.lead)
    if body.support and lead in body.support:
        whose = "" if body.lead else f" (category {body.category}'s rule)"
        message = (f"{lead!r} is the lead{whose}; it cannot also support"
                   + ("" if body.lead else ": name another lead, or leave it out"))
        raise InvalidPayload(message, [{"field": "support", "type": "value_error",
                                        "message": message}])
    priority = category_priority(body.category, body.urgent, rules)
    planned = plan_route(body.category, body.support, body.lead, rules, priority, now, why)
    rule = body.category if rules.has_rule(body.category) else "fallback"
    return DeskRoute(body.category, priority,
                     Routing(rule=rule, category_source=DESK_SOURCE),
                     assignments_of(planned, rules, now))


# -------------------------------------------------------------------- reroute


@dataclass(frozen=True)
class DeskChange:
    """A desk decision applied: the new record and the events that announce it."""

    record: IssueRecord
    events: list[Event]
    route: DeskRoute


def reroute(record: IssueRecord, body: ChooseRoute, reason: str, staff_id: str,
            rules: RuleSet, now: datetime, source: str = "reroute") -> DeskChange | None:
    """Correct a dispatched issue's route (see module doc); None if it is already that.

    ``urgent`` unset keeps an urgent issue urgent (the classifier's or an earlier
    desk's decision): only the desk's own ``urgent: false`` lowers it. Otherwise a
    reroute that only adds an agency would quietly give the new one slower deadlines,
    and keep the report as a "not urgent" example for retraining."""
    if body.urgent is None and record.priority is Priority.urgent:
        body = body.model_copy(update={"urgent": True})
    body = keeping_agencies(record, body)
    route = desk_route(body, rules, f"rerouted by the desk ({staff_id})", now)
    changed = reroute_record(record, route.category, route.priority, route.routing,
                             route.assignments, staff_id, reason, now)
    if changed is None:
        return None
    new = changed.record
    if new.triage is not None and new.triage.pending:  # a reroute settles a flag too
        new = settle_triage(new, staff_id, route.category, now)
    events = reroute_events(record, changed, staff_id, reason, now)
    # Newly involved agencies sit at the table the issue already has (the withdrawn ones
    # left it in ``reroute_record``), in the same change: a retried reroute seats no one.
    events += seat_rerouted(new, [a.agency for a in changed.added], rules, now, events[0])
    events.append(corrected(record, route, source, staff_id, reason, now))
    return DeskChange(new, events, route)


def keeping_agencies(record: IssueRecord, body: ChooseRoute) -> ChooseRoute:
    """``body`` with the issue's own agencies when it keeps the issue's category and names
    no supports: a change of urgency alone (the pages' reroute form has no support field)
    withdraws nobody, nor the supports other matched rules brought in. A new lead named
    alone leads them, and the old lead stays in support: the rule's supports instead
    withdrew the agencies other rules brought in (the power company of a crack leaking
    onto wiring) when the desk only meant to change who leads."""
    if body.category != record.category or body.support is not None:
        return body
    current = [a.agency for a in sorted(record.assignments, key=lambda a: a.role is not Role.lead)]
    lead = body.lead or current[0]
    return body.model_copy(update={
        "lead": lead, "support": [agency for agency in current if agency != lead]})


def corrected(before: IssueRecord, route: DeskRoute, source: str, staff_id: str,
              reason: str | None, now: datetime) -> RouteCorrected:
    """``route.corrected``: the desk's decision as a labelled example, for retraining."""
    held = before.status is IssueStatus.needs_triage
    return RouteCorrected(
        trace_id=before.trace_id, issue_id=before.issue_id, occurred_at=now, source=source,
        category=route.category, previous_category=None if held else before.category,
        urgent=route.urgent, support=route.support, staff_id=staff_id, reason=reason)


def reroute_events(before: IssueRecord, changed, staff_id: str, reason: str,
                   now: datetime) -> list[Event]:
    """``issue.rerouted`` (told to the resident once), then one ``assignment.withdrawn``
    per agency dropped and one ``assignment.created`` per agency added."""
    new = changed.record
    roles_before = {a.agency: a.role for a in before.assignments}
    rerouted = IssueRerouted(
        trace_id=new.trace_id, issue_id=new.issue_id, occurred_at=now, category=new.category,
        previous_category=before.category, priority=new.priority, staff_id=staff_id,
        reason=reason, withdrawn=[_ref(a) for a in changed.withdrawn],
        added=[a.summary() for a in changed.added],
        assignments=[a.summary() for a in new.assignments],
        agencies_changed=bool(changed.withdrawn or changed.added) or any(
            roles_before.get(a.agency) is not a.role for a in new.assignments))
    events: list[Event] = [rerouted]
    events += [rerouted.caused(AssignmentWithdrawn, occurred_at=now, agency=_ref(a),
                               staff_id=staff_id, reason=reason) for a in changed.withdrawn]
    events += [rerouted.caused(AssignmentCreated, occurred_at=now, category=new.category,
                               priority=new.priority, assignment=a.summary())
               for a in changed.added]
    return events


def _ref(assignment: Assignment) -> AgencyRef:
    return AgencyRef(agency=assignment.agency, agency_name=assignment.agency_name,
                     agency_name_en=assignment.agency_name_en)


# --------------------------------------------------------------------- triage


def triage(record: IssueRecord, body: ChooseRoute, reason: str | None, staff_id: str,
           rules: RuleSet, now: datetime) -> DeskChange:
    """The desk routes a report routing was unsure of (held or flagged)."""
    if record.triage is None or not record.triage.pending:
        raise InvalidTransition(f"issue {record.issue_id} is not waiting for triage")
    if record.status is IssueStatus.needs_triage:
        route = desk_route(body, rules, f"triaged by the desk ({staff_id})", now)
        settled = settle_triage(record, staff_id, route.category, now, reason)
        new = dispatch(settled, route.category, route.priority, route.routing,
                       route.assignments, now)
        return DeskChange(new, [dispatched_event(new, now),
                                corrected(record, route, "triage", staff_id, reason, now)],
                          route)
    # Flagged: dispatched already, urgently, on a best guess. Agreeing settles the flag
    # only; unless the desk says otherwise it stays as urgent as it was dispatched, and
    # keeps the agencies it was dispatched to (``keeping_agencies``).
    if body.urgent is None:
        body = body.model_copy(update={"urgent": record.priority is Priority.urgent})
    body = keeping_agencies(record, body)
    changed = reroute(record, body, reason or "triage: the desk chose another route",
                      staff_id, rules, now, source="triage")
    if changed is not None:
        return changed
    route = desk_route(body, rules, f"triaged by the desk ({staff_id})", now)
    return DeskChange(settle_triage(record, staff_id, route.category, now, reason),
                      [corrected(record, route, "triage", staff_id, reason, now)], route)
