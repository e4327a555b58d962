-- GET /stats counts each agency's ratings: the ratings of its issues in the window, one
-- per agency with an assignment in the rated cycle created by the as-of instant. They
-- were read off stat_rating by unnesting each rating's arrays of agencies and grouping
-- the result by agency: at 10^6 archived issues that took most of the ratings
-- statement's time. Here each (rating, agency) is a row, and GET /stats reads one
-- agency's range of the covering index (agency, at) at a time, with neither
-- (shared.archive_stats). Only a rating journaled under the rated issue itself has rows
-- here: its arrays are the ones filled (a copy in a merged report's journal finds its
-- agencies in stat_assignment).
CREATE TABLE stat_rating_agency (
    issue_id     text NOT NULL,
    event_id     text NOT NULL,
    agency       text NOT NULL,
    community    text NOT NULL,
    received_at  timestamptz NOT NULL,
    at           timestamptz NOT NULL,  -- the rating's
    created_at   timestamptz NOT NULL,  -- the agency's assignment in the rated cycle
    satisfied    boolean NOT NULL
);
-- No key of its own: a row is one of a stat_rating row's agencies, and stat_rating's key
-- already makes each rating once (a key here cost more space than the table, 160 MB at
-- 10^6 archived issues, for nothing the trigger does not already guarantee).

-- The rows follow stat_rating's, in the transaction that inserts them, whatever code
-- inserts them (an archiver of older code still running after the upgrade too). Only
-- the rows an INSERT actually inserted are in its transition table: a rating archived
-- again (ON CONFLICT DO NOTHING), or by a second archiver at once (it waits on the
-- first's row, then skips it), adds nothing. stat_rating's rows never change once
-- written, so inserts are all there is to follow.
CREATE FUNCTION stat_rating_agency_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stat_rating_agency (issue_id, event_id, agency, community, received_at, at,
                                    created_at, satisfied)
    SELECT r.issue_id, r.event_id, a.agency, r.community, r.received_at, r.at, a.created,
           r.satisfied
    FROM inserted_ratings r
        CROSS JOIN LATERAL unnest(r.agencies, r.agencies_created) AS a(agency, created)
    WHERE r.subject = r.issue_id;
    RETURN NULL;
END
$$;
-- Created before the rows below are copied: it waits for the archivers' transactions in
-- flight, and holds back new ones until this migration commits, so every rating is
-- copied here or by the trigger, once.
CREATE TRIGGER stat_rating_agency_follow AFTER INSERT ON stat_rating
    REFERENCING NEW TABLE AS inserted_ratings
    FOR EACH STATEMENT EXECUTE FUNCTION stat_rating_agency_follow();

INSERT INTO stat_rating_agency (issue_id, event_id, agency, community, received_at, at,
                                created_at, satisfied)
SELECT r.issue_id, r.event_id, a.agency, r.community, r.received_at, r.at, a.created,
       r.satisfied
FROM stat_rating r CROSS JOIN LATERAL unnest(r.agencies, r.agencies_created) AS a(agency, created)
WHERE r.subject = r.issue_id;

CREATE INDEX stat_rating_agency_window ON stat_rating_agency (agency, at)
    INCLUDE (created_at, satisfied, received_at, community, issue_id);

-- The overall count of those same ratings reads the window of a narrow partial index of
-- them alone; the wide stat_rating_window (0002) carried the arrays for the per-agency
-- count above, and nothing reads it any more (a copy's check for the rated issue's own
-- rating goes by the primary key).
CREATE INDEX stat_rating_own ON stat_rating (at)
    INCLUDE (received_at, community, issue_id, satisfied)
    WHERE subject = issue_id;
DROP INDEX stat_rating_window;
