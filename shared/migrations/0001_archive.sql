-- The archive: issues closed for WHISTLE_HOT_RETENTION, moved out of Redis with all they
-- have (docs/archive.md). Every table is keyed so that archiving the same issue again
-- changes nothing: the archiver's INSERTs are ON CONFLICT, in one transaction per batch.
--
-- Payloads are ``json`` (the text as Redis held it, checked, not parsed into jsonb):
-- nothing queries inside them, and json is the cheaper to write and to read back whole.
-- The child tables name their issue without a foreign key: one transaction writes an
-- issue with all its rows, and a key checked per row cost more than the rest of a bulk
-- load (bench.scale).

-- One row per archived issue. ``record`` is the IssueRecord exactly as Redis held it
-- (shared.issue.IssueRecord); the columns beside it are copies for filtering and listing.
CREATE TABLE archived_issue (
    issue_id     text COLLATE "C" PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    closed_at    timestamptz,
    status       text NOT NULL,
    category     text,
    priority     text,
    community    text NOT NULL,
    agencies     text[] NOT NULL,
    updated_at   timestamptz NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    record       json NOT NULL
);
-- The listing (GET /issues): newest first, keyset-paginated on (received_at, issue_id).
CREATE INDEX archived_issue_received ON archived_issue (received_at DESC, issue_id DESC);
CREATE INDEX archived_issue_community ON archived_issue (community, received_at DESC, issue_id DESC);
CREATE INDEX archived_issue_status ON archived_issue (status, received_at DESC, issue_id DESC);
CREATE INDEX archived_issue_agencies ON archived_issue USING gin (agencies);

-- The resident's contact, apart from the record: erasable on request
-- (`whistle privacy erase`), which leaves only ``masked``.
CREATE TABLE issue_contact (
    issue_id   text PRIMARY KEY,
    contact    jsonb,
    masked     jsonb NOT NULL,
    erased_at  timestamptz
);

-- The journal ({p}:issue:{id}:journal): every event, in commit order (seq from 0).
CREATE TABLE issue_event (
    issue_id     text NOT NULL,
    seq          integer NOT NULL,
    event_type   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    entry        json NOT NULL,
    PRIMARY KEY (issue_id, seq)
);

-- Timeline notes ({p}:issue:{id}:notes): steps that changed no state.
CREATE TABLE issue_note (
    issue_id  text NOT NULL,
    note_id   text NOT NULL,
    entry     json NOT NULL,
    PRIMARY KEY (issue_id, note_id)
);

-- Delivery records ({p}:issue:{id}:notifications), as notify kept them (recipient masked).
CREATE TABLE issue_notification (
    issue_id         text NOT NULL,
    notification_id  text NOT NULL,
    record           json NOT NULL,
    PRIMARY KEY (issue_id, notification_id)
);

-- The three rates' facts, derived from the journal when the issue is archived
-- (services.intake.stats.issue_facts), so that GET /stats reads rows of one window
-- through an index instead of replaying journals. ``received_at`` is the issue's:
-- compute_stats reads issues received in [since - 60 days, until].
CREATE TABLE stat_assignment (
    issue_id         text NOT NULL,
    agency           text NOT NULL,
    cycle            integer NOT NULL,
    community        text NOT NULL,  -- the issue's: a desk reads its own communities' figures
    received_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    on_time          boolean NOT NULL DEFAULT false,
    resolved_at      timestamptz,
    escalated_at     timestamptz,
    -- Seconds from creation to acknowledgement / resolution, as Python's total_seconds()
    -- gives them: the percentiles sort these floats instead of subtracting timestamps.
    ack_s            double precision,
    res_s            double precision,
    PRIMARY KEY (issue_id, agency, cycle)
);
-- GET /stats reads one agency's window at a time through this index alone (every
-- column it needs is in it), already in agency order: no heap access, no sort to group.
CREATE INDEX stat_assignment_window ON stat_assignment (agency, created_at)
    INCLUDE (received_at, acknowledged_at, on_time, resolved_at, escalated_at, ack_s, res_s,
             issue_id, community);

-- Every agency that ever had an assignment here: the list GET /stats walks.
CREATE TABLE stat_agency (
    agency  text PRIMARY KEY
);

-- ``issue_id`` is the journal's issue; ``subject`` the event's (a merged report's journal
-- holds the rating of the issue it joined). An event counts once, whichever journals hold it.
CREATE TABLE stat_rating (
    issue_id     text NOT NULL,
    event_id     text NOT NULL,
    subject      text NOT NULL,
    community    text NOT NULL,
    cycle        integer NOT NULL,
    received_at  timestamptz NOT NULL,
    at           timestamptz NOT NULL,
    satisfied    boolean NOT NULL,
    -- The agencies with an assignment in the rated cycle (of the journal's own issue, when
    -- it is the rated one), and when each was created: a rating counts for an agency
    -- whose assignment existed by the as-of instant.
    agencies     text[] NOT NULL DEFAULT '{}',
    agencies_created timestamptz[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (issue_id, event_id)
);
CREATE INDEX stat_rating_at ON stat_rating (at);

CREATE TABLE stat_escalation (
    issue_id     text NOT NULL,
    event_id     text NOT NULL,
    subject      text NOT NULL,
    community    text NOT NULL,
    agency       text NOT NULL,
    received_at  timestamptz NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (issue_id, event_id)
);
CREATE INDEX stat_escalation_at ON stat_escalation (at);
