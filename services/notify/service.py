"""notify: tell the resident at every step (事事有落实、件件有回应).

Each event becomes one message per resident, rendered from a template in the
resident's language and delivered through a channel (the desk outbox in Redis
by default, or a webhook). Every message has a deterministic id derived from
the event, and its delivery record lives in Redis, so a redelivered event never
reaches the resident twice.
"""

from __future__ import annotations

from nameko.dependency_providers import Config
from nameko.rpc import rpc

from services.notify.channels import build_channel
from services.notify.delivery import Deliveries, DeliveryFailed, message_id
from services.notify.templates import Templates
from shared import config as cfg
from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentResolved,
    Event,
    IssueDispatched,
    IssueReceived,
    IssueResolved,
    utcnow,
)
from shared.errors import EXPECTED_ERRORS
from shared.issue import IssueRecord
from shared.logging import WorkerLogger
from shared.messaging import subscribe
from shared.store import RedisProvider, Store
from shared.web import health_report, http

# Each event type has its own queue, so a message can overtake the one before
# it (routing takes milliseconds; staff in a test act instantly). A resident
# should read "received" before "dispatched" before "reported in": a message
# waits briefly for its predecessor, but is never held back for long.
PREDECESSOR = {"dispatched": "received", "acknowledged": "dispatched",
               "part_resolved": "dispatched", "resolved": "dispatched"}
ORDERING_GRACE_S = 3.0


class Messenger(RedisProvider):
    """Templates, the configured channel and the delivery records, built once."""

    def setup(self):
        super().setup()
        config = self.container.config
        self.templates = Templates.load(tz=cfg.get(config, cfg.DISPLAY_TZ))
        channel = build_channel(cfg.get(config, cfg.NOTIFY_CHANNEL), self.client, self.prefix,
                                cfg.get(config, cfg.NOTIFY_WEBHOOK_URL) or None)
        self.deliveries = Deliveries(self.client, self.prefix, channel)

    def get_dependency(self, worker_ctx):
        return self


class NotifyService:
    name = "notify"

    store = Store()
    messenger: Messenger = Messenger()
    log = WorkerLogger()
    config = Config()

    @subscribe(IssueReceived)
    def on_issue_received(self, event: IssueReceived) -> None:
        self._tell(event, "received", lambda record, lang: {"issue_id": record.issue_id})

    @subscribe(IssueDispatched)
    def on_issue_dispatched(self, event: IssueDispatched) -> None:
        def variables(record: IssueRecord, lang: str) -> dict:
            names = [_agency_name(a, lang) for a in event.assignments]
            lead = next(a for a in event.assignments if a.role.value == "lead")
            return {"issue_id": record.issue_id, "agencies": names,
                    "lead_agency": _agency_name(lead, lang),
                    "acknowledge_by": min(a.acknowledge_by for a in event.assignments)}

        self._tell(event, "dispatched", variables)

    @subscribe(AssignmentAcknowledged)
    def on_assignment_acknowledged(self, event: AssignmentAcknowledged) -> None:
        self._tell(event, "acknowledged", lambda record, lang: {
            "issue_id": record.issue_id, "agency": _agency_name(event, lang)})

    @subscribe(AssignmentResolved)
    def on_assignment_resolved(self, event: AssignmentResolved) -> None:
        """In a multi-agency case, tell the resident each agency's part is done."""
        if not event.remaining_agencies:
            return  # the last (or only) part: the "resolved" message says it all
        record = self.store.get(event.issue_id)
        remaining = [a for a in record.assignments if a.agency in event.remaining_agencies]
        self._tell(event, "part_resolved", lambda record, lang: {
            "issue_id": record.issue_id, "agency": _agency_name(event, lang),
            "remaining": [_agency_name(a, lang) for a in remaining]})

    @subscribe(IssueResolved)
    def on_issue_resolved(self, event: IssueResolved) -> None:
        self._tell(event, "resolved", lambda record, lang: {"issue_id": record.issue_id})

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_notifications(self, issue_id: str) -> list[dict]:
        self.store.get(issue_id)  # NotFound for an unknown issue, not an empty list
        return self.messenger.deliveries.history(issue_id)

    @http("GET", "/issues/<issue_id>/notifications", expected_exceptions=EXPECTED_ERRORS)
    def list_notifications_http(self, request, issue_id):
        return {"issue_id": issue_id, "notifications": self.list_notifications(issue_id)}

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)

    def _tell(self, event: Event, kind: str, variables) -> None:
        """Render, deliver once, and put it on the timeline. Raises to retry a failure."""
        record = self.store.get(event.issue_id)
        if kind in PREDECESSOR:
            # "resolved" also follows every "part_resolved" (one per agency but the last).
            parts = len(record.assignments) - 1 if kind == "resolved" else 0
            wanted = ("part_resolved", parts) if parts else (PREDECESSOR[kind], 1)
            self.messenger.deliveries.wait_for_kind(event.issue_id, *wanted,
                                                    timeout_s=ORDERING_GRACE_S)
        language = record.language.value
        text = self.messenger.templates.render(kind, language, **variables(record, language))
        contact = self.store.contact(event.issue_id)
        nid = message_id(event.event_id, kind)
        outcome = self.messenger.deliveries.deliver_once(nid, event.issue_id, kind, language,
                                                         text, contact)
        if outcome.fresh:
            def noted(current: IssueRecord):
                new = current.model_copy(deep=True)
                new.step(utcnow(), self.name, "resident_notified",
                         f"{kind} message {outcome.status} via {outcome.channel}")
                return new, {}

            self.store.apply(event.issue_id, f"notified:{nid}", noted, self.name)
        self.log.info("resident_notified", issue_id=event.issue_id, kind=kind,
                      status=outcome.status, channel=outcome.channel, duplicate=not outcome.fresh)
        if outcome.status == "failed":
            raise DeliveryFailed(f"{kind} message for {event.issue_id}: {outcome.detail}")


def _agency_name(item, language: str) -> str:
    return item.agency_name_en if language == "en" else item.agency_name
