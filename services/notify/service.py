"""notify: tell the resident at every step (事事有落实、件件有回应).

Each event becomes one message per reporter: the issue's own resident and every
neighbour whose report was merged into it (共性问题统筹), each rendered in that
resident's language and recorded under their own report. An escalation also
tells the supervisor at the new level (三级吹哨). Messages go through a channel
(the desk outbox in Redis by default, or a webhook). Every message has a
deterministic id derived from the event and its recipient, and its delivery
record lives in Redis, so a redelivered event never reaches anyone twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nameko.dependency_providers import Config
from nameko.rpc import rpc

from services.notify.channels import OutgoingMessage, build_channel
from services.notify.delivery import Deliveries, DeliveryFailed, message_id
from services.notify.recipients import (
    RESIDENT,
    SUPERVISOR,
    SUPERVISOR_LANGUAGE,
    deadline_name,
    in_language,
    is_merged,
    level_name,
    notified_step,
    ordering_waits,
    recipients_for,
    supervisor_for,
)
from services.notify.templates import Templates
from shared import config as cfg
from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentResolved,
    Event,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueResolved,
    TableConvened,
    TableTaskRecorded,
    utcnow,
)
from shared.errors import EXPECTED_ERRORS
from shared.issue import IssueRecord
from shared.logging import WorkerLogger
from shared.messaging import subscribe
from shared.store import RedisProvider, Store
from shared.web import health_report, http

# How long one event's messages may wait, in all, for the messages that must come
# before them (see recipients.ordering_waits): briefly, never for long.
ORDERING_GRACE_S = 3.0

Variables = Callable[[IssueRecord, str], dict]
"""(the event's issue, the reader's language) -> the template's variables."""


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

    @subscribe(IssueMerged)
    def on_issue_merged(self, event: IssueMerged) -> None:
        """Tell the neighbour whose report this was which open issue now carries it."""
        self._tell(event, "merged", lambda record, lang: {
            "issue_id": record.issue_id, "into_issue_id": event.into_issue_id})

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

    @subscribe(IssueEscalated)
    def on_issue_escalated(self, event: IssueEscalated) -> None:
        """The supervisor at the new level first, then every reporter."""
        record = self.store.get(event.issue_id)
        failures = [] if is_merged(record) else self._tell_supervisor(event)
        self._tell(event, "escalated", lambda record, lang: {
            "issue_id": record.issue_id, "agency": _agency_name(event.agency, lang),
            "level": level_name(event.level, lang),
            "supervisor": in_language(lang, event.supervisor, event.supervisor_en),
        }, record=record, failures=failures)

    @subscribe(TableConvened)
    def on_table_convened(self, event: TableConvened) -> None:
        self._tell(event, "table_convened", lambda record, lang: {
            "issue_id": record.issue_id, "meets_at": event.meets_at, "place": event.place,
            "agencies": [_agency_name(a, lang) for a in event.agencies]})

    @subscribe(TableTaskRecorded)
    def on_table_task_recorded(self, event: TableTaskRecorded) -> None:
        self._tell(event, "table_decision", lambda record, lang: {
            "issue_id": record.issue_id, "agency": _agency_name(event.agency, lang),
            "task": event.description, "due": event.due})

    @subscribe(AssignmentResolved)
    def on_assignment_resolved(self, event: AssignmentResolved) -> None:
        """In a multi-agency case, tell the resident each agency's part is done."""
        if not event.remaining_agencies:
            return  # the last (or only) part: the "resolved" message says it all
        self._tell(event, "part_resolved", lambda record, lang: {
            "issue_id": record.issue_id, "agency": _agency_name(event, lang),
            "remaining": [_agency_name(a, lang) for a in record.assignments
                          if a.agency in event.remaining_agencies]})

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

    def _tell(self, event: Event, kind: str, variables: Variables,
              record: IssueRecord | None = None,
              failures: list[DeliveryFailed] | None = None) -> None:
        """Tell every reporter of the event's issue, each once and in their language.

        Raises the first delivery failure (``failures``: from earlier messages about the
        same event) once everyone has been tried, so the event is retried; the messages
        already sent are not sent again.
        """
        record = record or self.store.get(event.issue_id)
        failures = list(failures or [])
        waits_end = time.monotonic() + ORDERING_GRACE_S
        for reporter in recipients_for(record, kind):
            own = reporter == event.issue_id
            reader = record if own else self.store.get(reporter)
            for wanted in ordering_waits(record, kind, reporter):
                self.messenger.deliveries.wait_for_kind(
                    reporter, *wanted, timeout_s=max(0.0, waits_end - time.monotonic()))
            language = reader.language.value
            message = OutgoingMessage(
                notification_id=message_id(event.event_id, kind, None if own else reporter),
                issue_id=reporter, kind=kind, language=language,
                text=self.messenger.templates.render(kind, language, **variables(record, language)),
                recipient=self.store.contact(reporter))
            failures += self._deliver(event, message, RESIDENT)
        if failures:
            raise failures[0]

    def _tell_supervisor(self, event: IssueEscalated) -> list[DeliveryFailed]:
        """The escalation notice to the street office or district, under the escalated issue."""
        language = SUPERVISOR_LANGUAGE
        message = OutgoingMessage(
            notification_id=message_id(event.event_id, "escalation_notice"),
            issue_id=event.issue_id, kind="escalation_notice", language=language,
            text=self.messenger.templates.render(
                "escalation_notice", language, issue_id=event.issue_id,
                agency=_agency_name(event.agency, language),
                deadline=deadline_name(event.deadline, language), missed=event.missed,
                level=level_name(event.level, language)),
            recipient=supervisor_for(event, language))
        return self._deliver(event, message, SUPERVISOR)

    def _deliver(self, event: Event, message: OutgoingMessage,
                 audience: str) -> list[DeliveryFailed]:
        """Deliver once and put it on the event's issue timeline; the failures, if any."""
        try:
            outcome = self.messenger.deliveries.deliver_once(message, audience)
        except DeliveryFailed as exc:  # another worker holds it: retried with the event
            return [exc]
        level = message.recipient["level"] if audience == SUPERVISOR else None
        step, detail = notified_step(message.kind, outcome.status, outcome.channel,
                                     event.issue_id, reporter=message.issue_id, level=level)
        if outcome.fresh:
            def noted(current: IssueRecord):
                new = current.model_copy(deep=True)
                new.step(utcnow(), self.name, step, detail)
                return new, {}

            self.store.apply(event.issue_id, f"notified:{message.notification_id}", noted,
                             self.name)
        self.log.info(step, issue_id=event.issue_id, recipient_issue=message.issue_id,
                      kind=message.kind, status=outcome.status, channel=outcome.channel,
                      duplicate=not outcome.fresh)
        if outcome.status == "failed":
            return [DeliveryFailed(f"{message.kind} message for {message.issue_id} "
                                   f"({audience}): {outcome.detail}")]
        return []


def _agency_name(item, language: str) -> str:
    return in_language(language, item.agency_name, item.agency_name_en)
