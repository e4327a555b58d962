-- depends: 0006_community_spelling
-- An agency's "withdrawn from us" list (GET /agencies/{agency}/assignments?status=withdrawn,
-- the workspace's 已撤回) reaches back RECENTLY_WITHDRAWN_DAYS (30), but an issue leaves
-- Redis a day after it closes: the archived issues a reroute took from an agency must be
-- found without reading every archived record. One row per (issue, agency) whose part a
-- reroute withdrew and that has no part on the issue now, with that withdrawal's time (the
-- latest, if it was withdrawn, given back and withdrawn again): what
-- services.agency.domain.latest_withdrawal reads off the record. The list reads one
-- agency's range of the index below and then the records it names.
CREATE TABLE archived_withdrawal (
    issue_id      text COLLATE "C" NOT NULL,
    agency        text NOT NULL,
    withdrawn_at  timestamptz NOT NULL,
    PRIMARY KEY (issue_id, agency)
);
CREATE INDEX archived_withdrawal_recent ON archived_withdrawal (agency, withdrawn_at DESC)
    INCLUDE (issue_id);

-- The rows of one archived record (IssueRecord as JSON, and its current agencies, the
-- archived_issue.agencies column): each agency of ``withdrawn`` that is not among the
-- current ones, with its latest withdrawn_at (assigned_at for a part without one, as
-- latest_withdrawal reads it; every release that withdrew parts wrote withdrawn_at).
CREATE FUNCTION archived_withdrawals(record json, agencies text[])
    RETURNS TABLE (agency text, withdrawn_at timestamptz)
    LANGUAGE sql STABLE AS $$
    SELECT part->>'agency',
           max(COALESCE(part->>'withdrawn_at', part->>'assigned_at')::timestamptz)
    FROM json_array_elements(CASE WHEN json_typeof(record->'withdrawn') = 'array'
                                  THEN record->'withdrawn' END) AS part
    WHERE part->>'agency' <> ALL(agencies)
    GROUP BY 1
$$;

-- The rows follow archived_issue's, in the transaction that writes them, whatever code
-- writes them (an archiver of older code still running after the upgrade too): inserted
-- with a newly archived issue; replaced when its record is written again (an issue
-- archived again, ON CONFLICT DO UPDATE; an erasure, which changes no part).
CREATE FUNCTION archived_withdrawal_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM archived_withdrawal w USING written_issues n WHERE w.issue_id = n.issue_id;
    END IF;
    INSERT INTO archived_withdrawal (issue_id, agency, withdrawn_at)
    SELECT n.issue_id, w.agency, w.withdrawn_at
    FROM written_issues n CROSS JOIN LATERAL archived_withdrawals(n.record, n.agencies) w
    ORDER BY 1, 2
    ON CONFLICT (issue_id, agency) DO UPDATE SET withdrawn_at = EXCLUDED.withdrawn_at;
    RETURN NULL;
END
$$;
-- Created before the rows below are copied: creating them waits for the archivers'
-- transactions in flight and holds back new ones until this migration commits, so every
-- archived issue is read here or by a trigger. (One trigger per event: PostgreSQL allows
-- transition tables only on a trigger of one event.)
CREATE TRIGGER archived_withdrawal_inserted AFTER INSERT ON archived_issue
    REFERENCING NEW TABLE AS written_issues
    FOR EACH STATEMENT EXECUTE FUNCTION archived_withdrawal_follow();
CREATE TRIGGER archived_withdrawal_updated AFTER UPDATE ON archived_issue
    REFERENCING NEW TABLE AS written_issues
    FOR EACH STATEMENT EXECUTE FUNCTION archived_withdrawal_follow();

-- The backfill: every withdrawal of the issues archived before this migration, whenever
-- it was (the records keep each withdrawn part with its time, since reroutes began). Only
-- records whose ``withdrawn`` is not empty are parsed: a text match first, which is
-- cheap beside parsing every record's JSON.
INSERT INTO archived_withdrawal (issue_id, agency, withdrawn_at)
SELECT i.issue_id, w.agency, w.withdrawn_at
FROM archived_issue i CROSS JOIN LATERAL archived_withdrawals(i.record, i.agencies) w
WHERE i.record::text ~ '"withdrawn"\s*:\s*\[\s*\{'
ON CONFLICT (issue_id, agency) DO NOTHING;
