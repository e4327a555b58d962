-- GET /stats reads a window's ratings and escalations through their time indexes. With
-- only the time in the index, every row meant a visit to the table, and a window's rows
-- lie scattered over all of it (issues are archived in the order they close, not in the
-- order they were rated): at 10^6 archived issues a 30-day window touched tens of
-- thousands of pages, mostly outside PostgreSQL's buffers. These indexes carry every
-- column the stats queries read, so a window is one contiguous range of an index, read
-- by an index-only scan (docs/benchmarks.md).
CREATE INDEX stat_rating_window ON stat_rating (at)
    INCLUDE (received_at, community, issue_id, event_id, subject, cycle, satisfied,
             agencies, agencies_created);
DROP INDEX stat_rating_at;

CREATE INDEX stat_escalation_window ON stat_escalation (at)
    INCLUDE (received_at, community, issue_id, event_id, subject, agency);
DROP INDEX stat_escalation_at;

-- How many issues were archived per day (midnight UTC) of their reception and per
-- community: GET /stats reports how many issues its window read, and counting 90 days of
-- archived_issue one row at a time cost more than the rest of the query at 10^6 issues.
-- The window's whole days are summed from here and its two partial days counted in
-- archived_issue (shared.archive_stats). Incremented in the archiving transaction, only
-- for the issues that transaction inserted (shared.archive.Archive.store_rows).
CREATE TABLE stat_issue_day (
    day        timestamptz NOT NULL,
    community  text NOT NULL,
    issues     bigint NOT NULL,
    PRIMARY KEY (day, community)
);
INSERT INTO stat_issue_day (day, community, issues)
SELECT date_trunc('day', received_at, 'UTC'), community, count(*) FROM archived_issue
GROUP BY 1, 2;
