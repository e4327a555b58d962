"""routing: decide category, priority and agencies (精准派单), then dispatch.

Rules are a YAML file (``RULES_FILE``, default the shipped ``rules.yaml``),
validated when the service starts: a bad file stops it with a message naming
the line. Routing publishes ``issue.dispatched`` for the resident and one
``assignment.created`` per agency.
"""

from __future__ import annotations

from datetime import datetime

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from services.routing.domain import RouteDecision, route_issue
from services.routing.rules import RuleSet, load_rules
from shared import config as cfg
from shared.contracts import (
    AssignmentCreated,
    IssueDispatched,
    IssueReceived,
    Slug,
    Strict,
    bounded_text,
    utcnow,
)
from shared.errors import EXPECTED_ERRORS
from shared.issue import Assignment, IssueRecord, Routing, dispatch
from shared.logging import WorkerLogger
from shared.messaging import EventBus, subscribe
from shared.store import Store
from shared.web import health_report, http, read_json, validate


class Rules(DependencyProvider):
    """Loads and validates the rules file once, at container setup.

    A :class:`~services.routing.rules.RulesError` raised here stops the service
    before it consumes anything, with every bad line listed.
    """

    def setup(self):
        path = cfg.get(self.container.config, cfg.RULES_FILE) or None
        self.rules: RuleSet = load_rules(path)

    def get_dependency(self, worker_ctx):
        return self.rules


class ExplainRoute(Strict):
    text: bounded_text(4000)
    category: Slug | None = None
    community: bounded_text(64) | None = None


def plan_assignments(decision: RouteDecision, rules: RuleSet, now: datetime) -> list[Assignment]:
    return [
        Assignment(agency=p.agency, agency_name=p.agency_name,
                   agency_name_en=rules.agency(p.agency).name_en,
                   sector=p.sector, role=p.role, assigned_at=now,
                   acknowledge_by=p.acknowledge_by, resolve_by=p.resolve_by)
        for p in decision.assignments
    ]


def dispatch_events(record: IssueRecord, cause: IssueReceived, now: datetime):
    summaries = [a.summary() for a in record.assignments]
    dispatched = cause.caused(IssueDispatched, occurred_at=now, category=record.category,
                              priority=record.priority, assignments=summaries)
    created = [dispatched.caused(AssignmentCreated, occurred_at=now, category=record.category,
                                 priority=record.priority, assignment=summary)
               for summary in summaries]
    return [dispatched, *created]


def explanation(decision: RouteDecision, rules: RuleSet) -> dict:
    return {
        "category": decision.category,
        "category_source": decision.category_source,
        "priority": decision.priority.value,
        "rule": decision.rule,
        "keywords": list(decision.keywords),
        "assignments": [
            {"agency": p.agency, "agency_name": p.agency_name,
             "agency_name_en": rules.agency(p.agency).name_en,
             "sector": p.sector.value, "role": p.role.value, "reason": p.reason,
             "acknowledge_by": p.acknowledge_by.isoformat(),
             "resolve_by": p.resolve_by.isoformat()}
            for p in decision.assignments
        ],
        "matched": [{"category": m.category, "priority": m.priority.value,
                     "keywords": list(m.keywords)} for m in decision.matched],
    }


class RoutingService:
    name = "routing"

    rules = Rules()
    store = Store()
    bus = EventBus()
    log = WorkerLogger()

    @subscribe(IssueReceived)
    def route_issue(self, event: IssueReceived) -> None:
        now = utcnow()
        decision = route_issue(event.description, event.category, self.rules, now)

        def routed(record: IssueRecord):
            new = dispatch(record, decision.category, decision.priority,
                           Routing(rule=decision.rule, keywords=list(decision.keywords),
                                   category_source=decision.category_source),
                           plan_assignments(decision, self.rules, now), now)
            return new, self.bus.stage(*dispatch_events(new, event, now))

        applied = self.store.apply(event.issue_id, event.event_id, routed, self.name)
        self.bus.publish(applied.outbox)
        self.log.info("issue_routed", issue_id=event.issue_id, category=decision.category,
                      priority=decision.priority.value, rule=decision.rule,
                      agencies=[p.agency for p in decision.assignments],
                      duplicate=not applied.changed)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def explain_route(self, payload: dict) -> dict:
        """What routing would decide for a text, without creating anything."""
        request = validate(ExplainRoute, payload)
        decision = route_issue(request.text, request.category, self.rules, utcnow())
        return explanation(decision, self.rules)

    @http("POST", "/routing/explain", expected_exceptions=EXPECTED_ERRORS)
    def explain_route_http(self, request):
        return self.explain_route(read_json(request, ExplainRoute).model_dump())

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)
