"""notify: tell the resident at every step (事事有落实、件件有回应).

Each event becomes one message per reporter: the issue's own resident and every
neighbour whose report was merged into it (共性问题统筹), each rendered in that
resident's language and recorded under their own report. An escalation also
tells the supervisor at the new level (三级吹哨). When every agency is done, each
reporter is asked to rate the outcome with a signed link (民事民评), and told when
the issue is reopened (so is the supervisor at the level it reopens at) or closed.

Messages go through the channel each resident chose (the desk outbox in Redis, a
signed webhook, or email; see ``channels``). Every message has a deterministic id
derived from the event and its recipient, and its delivery record lives in Redis,
so a redelivered event never reaches anyone twice. A refused message is retried
with the event, up to ``NOTIFY_MAX_ATTEMPTS``, then recorded as failed for the
desk to see (``delivery``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from functools import partial
from ipaddress import ip_address
from logging import getLogger
from urllib.parse import quote, urlsplit

from nameko.dependency_providers import Config

from services.notify.channels import (
    RECIPIENT_FIELDS,
    OutgoingMessage,
    Sealed,
    Unreachable,
    build_channels,
    direct_channel,
    why_unreachable,
)
from services.notify.delivery import (
    QUEUED,
    SENT,
    Deliveries,
    DeliveryFailed,
    Outcome,
    TimelineNote,
    history_of,
    message_id,
)
from services.notify.recipients import (
    RESIDENT,
    SUPERVISOR,
    Record,
    closed_reason_text,
    deadline_name,
    escalated_values,
    escalated_wording,
    if_unsatisfied,
    in_language,
    is_merged,
    level_name,
    notified_step,
    ordering_waits,
    recipients_for,
    reopen_comment,
    reopen_supervision,
    reopen_who,
    supervisor_for,
    supervisor_language,
    view_for,
)
from services.notify.relays import (
    RELAY_LIST_LIMIT,
    RELAYED_STEP,
    MarkRelayed,
    RelayTarget,
    audience_of,
    pending_relays,
    relay_note,
    relayed_record,
)
from services.notify.templates import DESK_WORDING, Templates
from shared import config as cfg
from shared.auth import Principal, issue_feedback_token, issue_resident_token
from shared.authz import (
    load_judged,
    may_read_notifications,
    may_relay,
    may_resend_rating_link,
    must_be_desk,
    notifications_view,
)
from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentResolved,
    AssignmentSummary,
    Event,
    IssueClosed,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueReopened,
    IssueRerouted,
    IssueResolved,
    TableConvened,
    TableTaskRecorded,
    new_id,
    utcnow,
)
from shared.errors import (
    EXPECTED_ERRORS,
    InvalidTransition,
    NotFound,
    RateLimited,
    Unavailable,
)
from shared.guard import Guard
from shared.issue import IssueRecord, TimelineEntry, masked_comment
from shared.jsoncodec import dumps, loads, utc_moment
from shared.logging import WorkerLogger
from shared.messaging import Deferred, subscribe
from shared.rpc import rpc
from shared.store import RedisProvider, Store
from shared.web import health_report, http, validate

_log = getLogger(__name__)

RELAY_READ_CHUNK = 200
"""Outbox entries read at a time while filling the desk's list (other communities' too)."""


def _every_issue(issue_id: str) -> bool:
    """An unscoped desk's view: every issue's messages."""
    return True


# How a message waits for the messages that must come before it (recipients.
# ordering_waits; the decision is delivery.ordering_wait). While one of them is being
# sent by a live worker (its delivery lease held and renewed), it waits, however slow
# the channel: a gateway taking 5 s a message must not let "resolved" overtake
# "dispatched". It waits no longer once that message is settled (sent, failing, given
# up on and handed to the desk) or its lease has lapsed (its worker died); and a
# message not begun yet (its own event waits for the one before it) is waited for
# ORDERING_GRACE_S from the event or from the resident's last attempt, not for ever.
ORDERING_GRACE_S = 3.0
# Waiting never holds a worker for long: the event goes back through the delay queue
# (Deferred) and the worker is free for other residents' messages, so residents behind
# a slow gateway cannot take up every one of nameko's max_workers by waiting. Soon
# after the event, the wait is usually a few milliseconds (the awaited message is
# being sent by another worker right now): a short look first, then round the delay
# queue every ORDERING_RECHECK_S. Past the grace the awaited one is slow: round the
# delay queue every ORDERING_SLOW_RECHECK_S, with no look (one read of the resident's
# records and of the leases of those in flight each time). The workers sending through
# a slow gateway are bounded too: NOTIFY_MAX_DIRECT_SENDS per channel (delivery.SendSlots);
# a message past it goes round the delay queue in the same way.
ORDERING_RECHECK_S = 0.1
ORDERING_SLOW_RECHECK_S = 0.5
# The short look: bounded, so a worker is never held for long (a waiting worker holding
# up the awaited one made a convoy once; here the awaited one is already running). A
# worker of this process that records one of the issue's messages wakes the waiter at
# once (delivery.Wakeups); the poll is for a message another notify process sends.
ORDERING_LOOK_S = 0.2
ORDERING_LOOK_EVERY_S = 0.05

# A rating link resent to a resident's phone or email is a text or a mail each time:
# the desk may send one per report this often (a second click, a retried request, or a
# careless script would otherwise text the resident again and again). A send the
# channel refused does not count.
RESEND_COOLDOWN_S = 300

# Event type -> the method that tells people about it.
ANNOUNCED: dict[type[Event], str] = {
    IssueReceived: "on_issue_received", IssueMerged: "on_issue_merged",
    IssueDispatched: "on_issue_dispatched", AssignmentAcknowledged: "on_assignment_acknowledged",
    AssignmentResolved: "on_assignment_resolved", IssueEscalated: "on_issue_escalated",
    TableConvened: "on_table_convened", TableTaskRecorded: "on_table_task_recorded",
    IssueResolved: "on_issue_resolved", IssueReopened: "on_issue_reopened",
    IssueClosed: "on_issue_closed", IssueRerouted: "on_issue_rerouted",
}

Variables = Callable[[Record, str, str], dict]
"""(the event's issue, the reader's language, the reader's report) -> the template's variables."""


class Messenger(RedisProvider):
    """Templates, the configured channels and the delivery records, built once."""

    def setup(self):
        config = self.container.config
        max_attempts = cfg.check_attempts(config)
        super().setup()
        self.templates = Templates.load(tz=cfg.get(config, cfg.DISPLAY_TZ))
        channels = build_channels(config, self.client, self.prefix)
        direct_sends = int(cfg.get(config, cfg.NOTIFY_MAX_DIRECT_SENDS))
        self.deliveries = Deliveries(
            self.client, self.prefix, channels, max_attempts, direct_sends=direct_sends,
            retry_delay_s=int(cfg.get(config, cfg.RETRY_DELAY_MS)) / 1000)
        workers = int(cfg.get(config, cfg.MAX_WORKERS))
        if channels.others and direct_sends * len(channels.others) >= workers:
            _log.warning("%s (%d) per direct channel, %d channels, lets slow gateways take "
                         "all %d of notify's workers (%s): set it lower",
                         cfg.NOTIFY_MAX_DIRECT_SENDS, direct_sends, len(channels.others),
                         workers, cfg.MAX_WORKERS)
        public_url = str(cfg.get(config, cfg.PUBLIC_URL))
        if _is_production(config) and _is_loopback(public_url):
            _log.warning("%s is %s: residents cannot open their rating links; set it to the "
                         "address residents reach Whistle at", cfg.PUBLIC_URL, public_url)

    def get_dependency(self, worker_ctx):
        return self


class NotifyService:
    name = "notify"

    store = Store()
    messenger: Messenger = Messenger()
    log = WorkerLogger()
    config = Config()
    guard = Guard()

    # A channel's refusal is routine (retried with the event, then handed to the desk):
    # logged as a warning per attempt, not as an error with a traceback.
    @subscribe(*ANNOUNCED, expected_exceptions=DeliveryFailed,
               dead_lettered="forget_slot_waits")
    def on_event(self, event: Event) -> None:
        """Every event a resident hears about, from one queue, in the order published."""
        getattr(self, ANNOUNCED[type(event)])(event)

    def forget_slot_waits(self, event: Event) -> None:
        """The event was dead-lettered (its retries used up for another reason than a
        refusal, or found invalid): its messages put off for a slot will not come back
        for one, and their marks must not hold the residents' next messages for the ten
        minutes they would otherwise last (``delivery.SLOT_WAIT_MARK_TTL_S``)."""
        self.messenger.deliveries.forget_slot_waits(event.event_id)

    def on_issue_received(self, event: IssueReceived) -> None:
        """Received, with the link to the resident's own progress page (the pages'
        ``/resident/{id}``): from the first message on they can follow it.

        Not again when the desk split the report from a wrong merge (routing takes it
        in again, ``allow_merge`` false): the resident was told it was received, with
        their link, when they reported it, and the dispatch that follows says what
        happens now (a second "received, we will dispatch it" came after it)."""
        if not event.allow_merge:
            return
        link = self._progress_link(event)
        self._tell(event, "received", lambda record, lang, reader: {
            "issue_id": record.issue_id, "link": link(reader)})

    def on_issue_merged(self, event: IssueMerged) -> None:
        """Tell the neighbour whose report this was which open issue now carries it."""
        self._tell(event, "merged", lambda record, lang, _reader: {
            "issue_id": record.issue_id, "into_issue_id": event.into_issue_id})

    def on_issue_dispatched(self, event: IssueDispatched) -> None:
        def variables(record: Record, lang: str, _reader: str) -> dict:
            lead = next(a for a in event.assignments if a.role.value == "lead")
            return {**_assigned(record, event.assignments, lang),
                    "lead_agency": _agency_name(lead, lang)}

        self._tell(event, "dispatched", variables,
                   wording=_for_one_agency("dispatched", event.assignments))

    def on_assignment_acknowledged(self, event: AssignmentAcknowledged) -> None:
        self._tell(event, "acknowledged", lambda record, lang, _reader: {
            "issue_id": record.issue_id, "agency": _agency_name(event, lang)})

    def on_issue_escalated(self, event: IssueEscalated) -> None:
        """The supervisor at the new level first, then every reporter; a reminder (another
        miss at the top level) goes to the supervisor alone: the reporters were told."""
        record = self.store.get(event.issue_id)
        failures = [] if is_merged(record) else self._tell_supervisor(event)
        if event.reminder:
            if failures:
                raise failures[0]
            return
        self._tell(event, "escalated", lambda _record, lang, _reader: escalated_values(event, lang),
                   record=record, failures=failures, wording=escalated_wording(event))

    def on_table_convened(self, event: TableConvened) -> None:
        self._tell(event, "table_convened", lambda record, lang, _reader: {
            "issue_id": record.issue_id, "meets_at": event.meets_at, "place": event.place,
            "agencies": [_agency_name(a, lang) for a in event.agencies]})

    def on_table_task_recorded(self, event: TableTaskRecorded) -> None:
        self._tell(event, "table_decision", lambda record, lang, _reader: {
            "issue_id": record.issue_id, "agency": _agency_name(event.agency, lang),
            "task": event.description, "due": event.due})

    def on_assignment_resolved(self, event: AssignmentResolved) -> None:
        """In a multi-agency case, tell the resident each agency's part is done."""
        if not event.remaining_agencies:
            return  # the last (or only) part: the "resolved" message says it all
        self._tell(event, "part_resolved", lambda record, lang, _reader: {
            "issue_id": record.issue_id, "agency": _agency_name(event, lang),
            "remaining": [_agency_name(a, lang) for a in record.assignments
                          if a.agency in event.remaining_agencies]})

    def on_issue_resolved(self, event: IssueResolved) -> None:
        """Every part is done; then each reporter's own rating link (民事民评).

        Both go out in every attempt of the event, so a refusing channel spends the
        two messages' attempts together and never outlives the event's retries.
        """
        record = self.store.get(event.issue_id)
        failures = self._tell_reporters(event, "resolved", lambda record, lang, _reader: {
            "issue_id": record.issue_id}, record)
        self._tell(event, "rating_request", self._rating_link(event, record), record=record,
                   failures=failures)

    def on_issue_reopened(self, event: IssueReopened) -> None:
        """Not satisfied: back to the agencies, with fresh deadlines, one level up (or
        still with the district, when it was there already). The supervisor at that
        level first, as at an escalation (reminded when nothing went up, as at another
        miss at the district), then every reporter."""
        record = self.store.get(event.issue_id)
        failures = ([] if is_merged(record)
                    else self._tell_supervisor_of_reopen(event, record))
        self._tell(event, "reopened", lambda record, lang, reader: {
            **_assigned(record, event.assignments, lang),
            "who": reopen_who(record, event.cycle, reader, lang),
            "supervision": reopen_supervision(event.level, event.escalated, lang),
            "reason": reopen_comment(record, event.reason, event.cycle, reader, lang)},
            record=record, failures=failures)

    def on_issue_rerouted(self, event: IssueRerouted) -> None:
        """The desk corrected the route: told once, naming every agency on it now; not at
        all when the agencies stay as they were (only the category or the urgency
        changed), which "passed to the right agencies" would misstate."""
        if not event.agencies_changed:
            return
        def variables(record: Record, lang: str, _reader: str) -> dict:
            lead = next(a for a in event.assignments if a.role.value == "lead")
            return {"issue_id": record.issue_id, "lead_agency": _agency_name(lead, lang),
                    "agencies": [_agency_name(a, lang) for a in event.assignments]}

        self._tell(event, "rerouted", variables,
                   wording=_for_one_agency("rerouted", event.assignments))

    def on_issue_closed(self, event: IssueClosed) -> None:
        self._tell(event, "closed", lambda record, lang, reader: {
            "issue_id": record.issue_id,
            "reason_text": closed_reason_text(record, event.reason, reader, lang)})

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_notifications(self, issue_id: str) -> list[dict]:
        self.store.get(issue_id)  # NotFound for an unknown issue, not an empty list
        return history_of(self.store.notifications(issue_id))  # archived ones too

    @http("GET", "/issues/<issue_id>/notifications", expected_exceptions=EXPECTED_ERRORS)
    def list_notifications_http(self, request, issue_id):
        principal = self.guard.check(request)
        _, view = load_judged(self.store.get, issue_id,
                              lambda r: may_read_notifications(principal, r, issue_id))
        return {"issue_id": issue_id, "notifications": notifications_view(
            view, history_of(self.store.notifications(issue_id)))}  # archived ones too

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def resend_rating_link(self, token: str, issue_id: str) -> dict:
        """Send a resident's rating link again (desk staff), straight to the resident."""
        principal = self.guard.staff(token, "rating_link.resend", issue_id)
        return self._resend_rating_link(principal, issue_id)

    @http("POST", "/issues/<issue_id>/rating-link", expected_exceptions=EXPECTED_ERRORS)
    def resend_rating_link_http(self, request, issue_id):
        principal = self.guard.check(request, "rating_link.resend", issue_id)
        return 202, self._resend_rating_link(principal, issue_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def rating_link_reach(self, token: str, issue_id: str) -> dict:
        """Whether a resent rating link would reach the resident of ``issue_id`` directly
        (desk staff, within its communities): ``{issue_id, channel, unreachable}``, the
        channel it would go by, or why none would (``Unreachable``). The desk's issue page
        offers the resend only when one would."""
        principal = self.guard.staff(token)
        must_be_desk(principal)
        own, contact = self._reporter_contact(
            issue_id, lambda r: may_read_notifications(principal, r, issue_id))
        channel, unreachable = self._direct_reach(contact)
        return {"issue_id": issue_id, "channel": channel,
                "unreachable": unreachable.value if unreachable else None}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def desk_relays(self, token: str) -> list[dict]:
        """The messages in the desk's outbox still to relay (待转告), for desk staff of
        their communities, oldest first, at most ``RELAY_LIST_LIMIT`` (relaying them
        brings on the next), each with whom to tell: a resident's name and phone *in
        full* (the one view that shows them; audited as a read of those issues'
        contacts), or a supervisor's office (``relays.relay_item``).

        The outbox holds only what is still to relay (a relay takes its entry off), read
        from its oldest end a chunk at a time until the list is full: a read costs what is
        left to relay, and at most the list's worth for a desk that sees every entry."""
        principal = self.guard.staff(token, "relay.read")
        must_be_desk(principal)
        items: list[dict] = []
        listed: set[str] = set()
        skip = 0
        while len(items) < RELAY_LIST_LIMIT:
            chunk = self.store.oldest_desk_messages(skip, RELAY_READ_CHUNK)
            skip += len(chunk)
            entries = [loads(raw) for raw in chunk]
            relayed = set(self.store.relays(sorted(
                {nid for e in entries if (nid := e.get("notification_id"))})))
            if principal.communities is None:
                visible = _every_issue
            else:  # the community index: an issue it does not know is in none of them
                visible = set(self.store.only_in_communities(
                    sorted({e.get("issue_id") or "" for e in entries}),
                    principal.communities)).__contains__
            found = pending_relays(entries[::-1], relayed | listed, visible)
            listed.update(item["notification_id"] for item in found)
            items += found
            if len(chunk) < RELAY_READ_CHUNK:
                break
        items = items[:RELAY_LIST_LIMIT]
        self.guard.on_issues([item["issue_id"] for item in items])
        return items

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def mark_relayed(self, token: str, notification_id: str, payload: dict | None = None
                     ) -> dict:
        """The desk relayed an outbox message (desk staff of its issue's community):
        recorded on its delivery record (``relayed_by``, ``relayed_at``) with one
        timeline note, and off the desk's list. Twice is once: the same answer, one note
        (while the relay is remembered: until its issue is archived, ``RELAYED_KEPT_S``
        at most). An unknown id is a 404 only to a desk that could see it (an unscoped one)."""
        principal = self.guard.staff(token, "relay.mark")
        must_be_desk(principal)
        nid = validate(RelayTarget, {"notification_id": notification_id}).notification_id
        done = self.store.relays([nid]).get(nid)
        found = None if done else self.store.desk_message(nid)
        entry = loads(done) if done else (found[1] if found else None)
        record = None
        if entry is not None:
            with suppress(NotFound):
                record = self.store.get(entry["issue_id"])
        may_relay(principal, nid, record.location.community if record else None)
        if entry is None:
            raise NotFound(f"no message {nid} in the desk's outbox")
        # Only now the body: a desk of another community learns nothing of the message
        # (nor whether there is one) from what is wrong with it.
        body = validate(MarkRelayed, payload or {})
        issue_id = entry["issue_id"]
        self.guard.on_issue(issue_id)
        if done is None:
            now = utcnow()
            relay = {"notification_id": nid, "issue_id": issue_id, "kind": entry.get("kind"),
                     "audience": audience_of(entry), "relayed_by": principal.staff_id,
                     "relayed_at": utc_moment(now),
                     "note": masked_comment(body.note, [(entry.get("recipient") or {})
                                                        .get("name")])}
            # The first relay wins; the entry leaves the outbox with it.
            relay = loads(self.store.relay_desk_message(nid, dumps(relay), found[0],
                                                        now.timestamp()))
        else:
            relay = entry
        self._record_relay(relay)
        self.log.info("notification_relayed", issue_id=issue_id, notification_id=nid,
                      kind=relay["kind"], staff_id=principal.staff_id, jti=principal.jti)
        return {k: relay.get(k) for k in ("notification_id", "issue_id", "kind", "audience",
                                          "relayed_by", "relayed_at")}

    def _record_relay(self, relay: dict) -> None:
        """The relay on the message's delivery record and, once, on its issue's timeline.
        Repeated by a second relay of the same message (the same values: a crash between
        the relay and these writes is mended then). Nothing once the issue is archived."""
        key, nid = self.store.keys.notifications(relay["issue_id"]), relay["notification_id"]
        raw = self.store.redis.hget(key, nid)
        if raw is not None:
            self.store.redis.hset(key, nid, dumps(relayed_record(loads(raw), relay)))
        with suppress(NotFound):
            self.store.add_note(relay["issue_id"], f"{RELAYED_STEP}:{nid}", TimelineEntry(
                at=datetime.fromisoformat(relay["relayed_at"]), service=self.name,
                step=RELAYED_STEP, detail=relay_note(relay["kind"], relay["audience"])))

    def _reporter_contact(self, reporter: str, judge) -> tuple[IssueRecord, dict]:
        """The report and its resident's contact (none once archived: closed by then),
        once ``judge`` (the caller's ``may_*``) allows it; an unknown report is judged as
        ``shared.authz.load_judged`` does, so a refusal does not say whether it exists."""
        try:
            own, (contact,) = self.store.get_with(
                reporter, lambda pipe: pipe.hgetall(self.store.keys.contact(reporter)))
        except NotFound:
            (own, _), contact = load_judged(self.store.get, reporter, judge), {}
        judge(own)
        return own, contact

    def _direct_reach(self, contact: dict) -> tuple[str | None, Unreachable | None]:
        """The channel reaching the resident without the desk (``None``), or why none does."""
        channels = self.messenger.deliveries.channels
        has_phone, has_email = bool(contact.get("phone")), bool(contact.get("email"))
        channel = direct_channel(contact.get("preferred_channel") or channels.default,
                                 channels.configured, has_phone=has_phone, has_email=has_email)
        return channel, why_unreachable(channels.configured, has_phone, has_email)

    def _resend_rating_link(self, principal: Principal, reporter: str) -> dict:
        """A fresh rating link for ``reporter``'s current cycle, through a channel that
        reaches the resident directly (webhook or email), never through the desk: the desk
        asks for it, and learns only whether it went. Its record holds the link redacted."""
        must_be_desk(principal)
        # Archived, so closed: refused below as it was while hot (409).
        own, contact = self._reporter_contact(  # outside its communities: 403, known or not
            reporter, lambda r: may_read_notifications(principal, r, reporter))
        work = self.store.get(own.merged_into) if own.merged_into else own
        may_resend_rating_link(principal, work)
        channel, _ = self._direct_reach(contact)
        if channel is None:
            raise InvalidTransition(
                f"no channel reaches the resident of {reporter} directly (a webhook to their "
                "phone, or email): a rating link is never sent through the desk")
        now = utcnow()
        secret = cfg.get(self.config, cfg.SECRET)
        base = str(cfg.get(self.config, cfg.PUBLIC_URL)).rstrip("/")
        ttl = max(1, int((work.feedback_due - now).total_seconds()))
        token = partial(issue_feedback_token, reporter_issue_id=reporter,
                        issue_id=work.issue_id, cycle=work.reopen_count, secret=secret,
                        ttl_s=ttl)
        values = {"issue_id": work.issue_id, "link": rating_link(base, reporter, token),
                  "expires_at": work.feedback_due,
                  "if_unsatisfied": if_unsatisfied(work.escalation_level, own.language.value)}
        message = self._message(message_id(f"resend:{new_id()}", "rating_request"), reporter,
                                "rating_request", own.language.value, values, contact, channel)
        cooldown = self.store.keys.resend_cooldown(reporter)
        if not self.store.redis.set(cooldown, message.notification_id, nx=True,
                                    ex=RESEND_COOLDOWN_S):
            wait = self.store.redis.ttl(cooldown)
            raise RateLimited(f"a rating link was resent for {reporter} a moment ago; the "
                              f"resident can be sent another in {max(wait, 1)} s",
                              retry_after=max(wait, 1))
        # Nothing retries a resend: a refusal is "failed" (it read "queued", as if it
        # would still go), and the desk may ask again at once.
        try:
            outcome = self.messenger.deliveries.deliver_once(message, RESIDENT,
                                                             single_attempt=True)
        except Deferred as busy:
            # Its channel has as many sends on the wire as it may: nothing went, so the
            # desk may ask again at once (an RPC cannot go round the delay queue).
            self.store.redis.delete(cooldown)
            raise Unavailable(f"the resident's channel is busy ({busy}); try again in a "
                              "moment") from None
        if outcome.status != SENT:  # the channel refused it: the desk may try again
            self.store.redis.delete(cooldown)
        self.log.info("rating_link_resent", issue_id=work.issue_id, recipient_issue=reporter,
                      channel=outcome.channel, status=outcome.status,
                      staff_id=principal.staff_id, jti=principal.jti)
        return {"issue_id": reporter, "notification_id": message.notification_id,
                "channel": outcome.channel, "status": outcome.status, "detail": outcome.detail}

    @http("GET", "/health")
    def health(self, request):
        return health_report(self.name, self.store.redis)

    def _rating_link(self, event: IssueResolved, record: IssueRecord) -> Variables:
        """Each reporter's signed rating link for this resolution cycle.

        The token is issued as of the event (not of this attempt), so a retried message
        carries the same link, valid until the rating window closes.
        """
        window = int(cfg.get(self.config, cfg.RATING_WINDOW_S))
        base = str(cfg.get(self.config, cfg.PUBLIC_URL)).rstrip("/")
        secret = cfg.get(self.config, cfg.SECRET)
        cycle = getattr(record, "reopen_count", 0)
        level = record.escalation_level

        def variables(record: IssueRecord, lang: str, reader: str) -> dict:
            token = partial(issue_feedback_token, reporter_issue_id=reader,
                            issue_id=record.issue_id, cycle=cycle, secret=secret,
                            ttl_s=window, now=event.occurred_at.timestamp())
            return {"issue_id": record.issue_id, "link": rating_link(base, reader, token),
                    "expires_at": event.occurred_at + timedelta(seconds=window),
                    "if_unsatisfied": if_unsatisfied(level, lang)}

        return variables

    def _progress_link(self, event: Event):
        """Each reporter's progress link (``shared.auth.issue_resident_token``: reads their
        own report, nothing else), sealed like the rating link: its token is only in what
        the channel hands the resident. Issued as of the event, so a retry sends the same."""
        base = str(cfg.get(self.config, cfg.PUBLIC_URL)).rstrip("/")
        secret = cfg.get(self.config, cfg.SECRET)

        def link(reader: str) -> Sealed:
            token = partial(issue_resident_token, reader, secret,
                            now=event.occurred_at.timestamp())
            return progress_link(base, reader, token)

        return link

    def _tell(self, event: Event, kind: str, variables: Variables,
              record: IssueRecord | None = None,
              failures: list[DeliveryFailed] | None = None, wording: str | None = None) -> None:
        """Tell every reporter of the event's issue, each once and in their language.

        Raises the first delivery failure (``failures``: from earlier messages about the
        same event) once everyone has been tried, so the event is retried; the messages
        already sent, or given up on, are not sent again.
        """
        failures = self._tell_reporters(event, kind, variables, record, failures, wording)
        if failures:
            raise failures[0]

    def _tell_reporters(self, event: Event, kind: str, variables: Variables,
                        record: IssueRecord | None = None,
                        failures: list[DeliveryFailed] | None = None,
                        wording: str | None = None) -> list[DeliveryFailed]:
        """Try every reporter once; the failures so far (to retry the event with).

        ``wording``: the template to render, when not the kind's own (``_for_one_agency``).
        """
        contacts, histories = {}, {}
        if record is None:
            # The resident's contact and what they were told so far come with the
            # record: the ordering check below rarely needs another round trip.
            # Only what this kind of message needs of the record is read (view_for).
            record, contacts[event.issue_id], histories[event.issue_id] = (
                self.store.view_with_contact_and_notifications(event.issue_id, view_for(kind)))
        failures = list(failures or [])
        young = (utcnow() - event.occurred_at).total_seconds() < ORDERING_GRACE_S
        try:
            for reporter in recipients_for(record, kind):
                own = reporter == event.issue_id
                reader = record if own else self.store.get(reporter)
                for wanted in ordering_waits(record, kind, reporter):
                    self._await_turn(event, kind, reporter, wanted, histories.get(reporter),
                                     young)
                language = reader.language.value
                contact = (contacts[reporter] if reporter in contacts
                           else self.store.contact(reporter))
                message = self._message(
                    message_id(event.event_id, kind, None if own else reporter), reporter,
                    kind, language, variables(record, language, reporter), contact,
                    wording=wording)
                failures += self._deliver(event, message, RESIDENT)
        except Deferred:
            # A message of this event was refused already: the event must come back after
            # that refusal's backoff, with the attempt counted, not from the delay queue
            # in a moment (which sent the refused message again at once, uncounted). The
            # message put off comes back with it.
            if failures:
                raise failures[0] from None
            raise
        return failures

    def _message(self, notification_id: str, reporter: str, kind: str, language: str,
                 values: dict, contact: dict, channel: str | None = None,
                 wording: str | None = None) -> OutgoingMessage:
        """One rendered message to one resident; its sealed links open only at delivery.
        ``wording``: the template, when not ``kind``'s own (the record keeps ``kind``)."""
        templates = self.messenger.templates
        desk_wording = DESK_WORDING.get(kind)
        return OutgoingMessage(
            notification_id=notification_id, issue_id=reporter, kind=kind, language=language,
            text=templates.render(wording or kind, language, **values),
            for_desk=templates.render(desk_wording, language, **values) if desk_wording
            else None,
            subject=templates.subject(kind, language, **values),
            recipient={k: contact[k] for k in RECIPIENT_FIELDS if contact.get(k)},
            preferred_channel=channel or contact.get("preferred_channel") or None,
            sealed=tuple(v for v in values.values() if isinstance(v, Sealed)))

    def _await_turn(self, event: Event, kind: str, reporter: str, wanted: tuple[str, int],
                    history: dict[str, str] | None, young: bool) -> None:
        """Returns when ``wanted`` (kind, count) messages to ``reporter`` allow this one
        to go; raises ``Deferred`` while they do not (messages already sent are not
        resent when the event comes back). See ``ORDERING_GRACE_S``.

        ``history``: the reporter's delivery records as read with the event's issue (the
        common case: settled, and nothing more is read); ``young``: the event is within
        ``ORDERING_GRACE_S``, when a short look is worth a worker's time.
        """
        before, count = wanted
        if history is not None and Deliveries.settled_in(history, before, count):
            return
        deliveries = self.messenger.deliveries
        if young and deliveries.await_settled(reporter, before, count, ORDERING_LOOK_S,
                                              ORDERING_LOOK_EVERY_S):
            return
        why = deliveries.why_wait(reporter, before, count, event.occurred_at,
                                  ORDERING_GRACE_S)
        if why is not None:
            raise Deferred(ORDERING_RECHECK_S if young else ORDERING_SLOW_RECHECK_S,
                           f"{kind} waits: {why}")

    def _tell_supervisor(self, event: IssueEscalated) -> list[DeliveryFailed]:
        """The escalation notice to the street office or district, under the escalated issue."""
        language = supervisor_language(event)
        # A reminder (the district follows it already): nothing went up, and the notice
        # says so rather than "escalated to the district" at every window.
        return self._notify_supervisor(
            event, "escalation_notice",
            "escalation_reminder" if event.reminder else "escalation_notice", language,
            {"issue_id": event.issue_id, "agency": _agency_name(event.agency, language),
             "deadline": deadline_name(event.deadline, language), "missed": event.missed,
             "level": level_name(event.level, language)})

    def _tell_supervisor_of_reopen(self, event: IssueReopened,
                                   record: IssueRecord) -> list[DeliveryFailed]:
        """The reopen notice to the supervisor at the reopened issue's level: the issue,
        its community, the agencies it is back with and their new 报到 deadline, and why
        (the resident was not satisfied). Like the escalation notice, nothing of the
        resident: not their name, their phone, nor their comment (it can name a flat or
        a neighbour; the desk reads it on the timeline)."""
        language = supervisor_language(event)
        # Still at the district (nothing went up): reminded, as at another miss there.
        return self._notify_supervisor(
            event, "reopen_notice", "reopen_notice" if event.escalated else "reopen_reminder",
            language, {**_assigned(record, event.assignments, language),
                       "community": record.location.community,
                       "level": level_name(event.level, language)})

    def _notify_supervisor(self, event: IssueEscalated | IssueReopened, kind: str,
                           wording: str, language: str, values: dict) -> list[DeliveryFailed]:
        """One notice to the supervisor the event names, in its language, under the event's
        issue; its id is the event's and ``kind``'s, so a redelivered event sends none."""
        message = OutgoingMessage(
            notification_id=message_id(event.event_id, kind),
            issue_id=event.issue_id, kind=kind, language=language,
            text=self.messenger.templates.render(wording, language, **values),
            recipient=supervisor_for(event, language))
        return self._deliver(event, message, SUPERVISOR)

    def _deliver(self, event: Event, message: OutgoingMessage,
                 audience: str) -> list[DeliveryFailed]:
        """Deliver once and put it on the event's issue timeline; the failures, if any."""
        level = message.recipient["level"] if audience == SUPERVISOR else None
        made: list[TimelineNote] = []

        def timeline_note(outcome: Outcome) -> TimelineNote:
            why = outcome.note or (outcome.detail if outcome.status == "failed" else "")
            step, detail = notified_step(message.kind, outcome.status, outcome.channel,
                                         event.issue_id, reporter=message.issue_id,
                                         level=level, note=why)
            made.append(TimelineNote(event.issue_id, f"notified:{message.notification_id}",
                                     TimelineEntry(at=utcnow(), service=self.name, step=step,
                                                   detail=detail)))
            return made[-1]

        # A message another worker is sending raises Deferred: the event comes back.
        outcome = self.messenger.deliveries.deliver_once(message, audience, timeline_note,
                                                         event_id=event.event_id)
        # Written with the record, the note was made for this very outcome.
        note = made[-1] if outcome.noted else timeline_note(outcome)
        if outcome.fresh and not outcome.noted:
            self.store.add_note(note.issue_id, note.note_id, note.entry)
        self.log.info(note.entry.step, issue_id=event.issue_id,
                      recipient_issue=message.issue_id, kind=message.kind,
                      status=outcome.status, channel=outcome.channel, detail=outcome.detail,
                      duplicate=not outcome.fresh)
        if outcome.status == QUEUED:
            return [DeliveryFailed(f"{message.kind} message for {message.issue_id} "
                                   f"({audience}): {outcome.detail}")]
        return []


def rating_link(base: str, reporter: str, token: Callable[[], str]) -> Sealed:
    """The resident's rating link, sealed: readable copies show it without the token, and
    ``token`` signs one only when a channel opens it for the resident."""
    return _sealed_link(f"{base}/issues/{quote(reporter)}/feedback?token=", token)


def progress_link(base: str, reporter: str, token: Callable[[], str]) -> Sealed:
    """The resident's progress page (``services.web``), sealed as the rating link is."""
    return _sealed_link(f"{base}/resident/{quote(reporter)}?token=", token)


def _sealed_link(url: str, token: Callable[[], str]) -> Sealed:
    return Sealed(shown=url + REDACTED, opened=lambda: url + token())


REDACTED = "[redacted]"


def _agency_name(item, language: str) -> str:
    return in_language(language, item.agency_name, item.agency_name_en)


def _for_one_agency(kind: str, assignments: list[AssignmentSummary]) -> str | None:
    """The wording of ``kind`` ("dispatched", "rerouted") when one agency has the whole
    issue: no "with X leading" and no "each agency" about a single one."""
    return f"{kind}_one" if len({a.agency for a in assignments}) == 1 else None


def _assigned(record: Record, assignments: list[AssignmentSummary], language: str) -> dict:
    """The issue, its agencies and the first 报到 deadline, for "dispatched" and "reopened"."""
    return {"issue_id": record.issue_id,
            "agencies": [_agency_name(a, language) for a in assignments],
            "acknowledge_by": min(a.acknowledge_by for a in assignments)}


def _is_production(config) -> bool:
    return str(cfg.get(config, cfg.ENVIRONMENT)).strip().lower() in ("production", "prod")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False
