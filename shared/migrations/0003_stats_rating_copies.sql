-- The ratings journaled under another issue than the rated one (a merged report's
-- journal holds the rating of the issue it joined): few, but GET /stats looked for them
-- by reading every rating of its window a second time (stat_rating_window). This
-- partial index holds only them (docs/archive.md, "The three rates without replaying
-- history").
CREATE INDEX stat_rating_copies ON stat_rating (at)
    INCLUDE (received_at, community, issue_id, event_id, subject, cycle, satisfied)
    WHERE subject <> issue_id;
