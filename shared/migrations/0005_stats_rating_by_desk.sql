-- GET /stats splits the ratings by who recorded them (rated_by): the resident through
-- their own link, or the desk on their behalf after a call-back or visit (电话回访: the
-- issue.rated event has recorded_by). by_desk says which, on each rating and on each
-- of its rows per agency.
ALTER TABLE stat_rating ADD COLUMN by_desk boolean;
ALTER TABLE stat_rating_agency ADD COLUMN by_desk boolean;

-- An archiver of older code, still running after the upgrade, inserts no by_desk: it is
-- read from the rating's event, which the same transaction has already written into
-- issue_event (shared.archive writes the journal before the facts). This code always
-- gives it, and the trigger then does nothing.
CREATE FUNCTION stat_rating_by_desk_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.by_desk IS NULL THEN
        NEW.by_desk := coalesce((
            SELECT e.entry->>'recorded_by' IS NOT NULL FROM issue_event e
            WHERE e.issue_id = NEW.issue_id AND e.event_type = 'issue.rated'
              AND e.entry->>'event_id' = NEW.event_id
            LIMIT 1), false);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER stat_rating_by_desk_fill BEFORE INSERT ON stat_rating
    FOR EACH ROW EXECUTE FUNCTION stat_rating_by_desk_fill();

-- The rows per agency are inserted by stat_rating_agency_follow (0004), from the
-- ratings an INSERT inserted, so their rating is in stat_rating already: its by_desk is
-- read by the primary key.
CREATE FUNCTION stat_rating_agency_by_desk_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.by_desk IS NULL THEN
        NEW.by_desk := coalesce((SELECT r.by_desk FROM stat_rating r
                                 WHERE r.issue_id = NEW.issue_id
                                   AND r.event_id = NEW.event_id), false);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER stat_rating_agency_by_desk_fill BEFORE INSERT ON stat_rating_agency
    FOR EACH ROW EXECUTE FUNCTION stat_rating_agency_by_desk_fill();

-- The ratings archived before this migration: from their events in the archived journals.
UPDATE stat_rating r SET by_desk = (e.entry->>'recorded_by') IS NOT NULL
FROM issue_event e
WHERE e.issue_id = r.issue_id AND e.event_type = 'issue.rated'
  AND e.entry->>'event_id' = r.event_id;
UPDATE stat_rating SET by_desk = false WHERE by_desk IS NULL;
-- Not declared NOT NULL, though the trigger leaves no row without it: an older
-- archiver's staging table is made LIKE stat_rating, and gets no value for it.
UPDATE stat_rating_agency a SET by_desk = r.by_desk
FROM stat_rating r WHERE r.issue_id = a.issue_id AND r.event_id = a.event_id;
UPDATE stat_rating_agency SET by_desk = false WHERE by_desk IS NULL;
ALTER TABLE stat_rating_agency ALTER COLUMN by_desk SET NOT NULL;

-- The indexes GET /stats reads ratings through (0003, 0004), by the same names, cover
-- by_desk too, so they stay index-only scans.
DROP INDEX stat_rating_own;
CREATE INDEX stat_rating_own ON stat_rating (at)
    INCLUDE (received_at, community, issue_id, satisfied, by_desk)
    WHERE subject = issue_id;
DROP INDEX stat_rating_copies;
CREATE INDEX stat_rating_copies ON stat_rating (at)
    INCLUDE (received_at, community, issue_id, event_id, subject, cycle, satisfied, by_desk)
    WHERE subject <> issue_id;
DROP INDEX stat_rating_agency_window;
CREATE INDEX stat_rating_agency_window ON stat_rating_agency (agency, at)
    INCLUDE (created_at, satisfied, by_desk, received_at, community, issue_id);
