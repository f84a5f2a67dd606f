-- Backfill reads yield to live changes, and a backfill that keeps failing
-- stops.

-- A delivery's priority: 0 for a live change (and everything else), 1 for
-- a backfill's read. The claim takes a subscription's due deliveries of
-- priority 0 first and fills the room left with reads, so a live change
-- committed while thousands of reads wait is claimed before them. Per row,
-- order is unchanged: a delivery is claimed only as its row's oldest open
-- one, whatever its priority.
-- NOT VALID: every existing row takes the default 0, so there is nothing
-- to check, and the table is not read under this migration's lock; new
-- and updated rows are checked. Any other value would never be claimed.
ALTER TABLE walhook.deliveries
    ADD COLUMN priority smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT delivery_priority_known CHECK (priority IN (0, 1)) NOT VALID;

-- Claiming: per subscription and priority, the open work in order. The
-- claim walks priority 0, then priority 1, each walk an index range that
-- stops at the deliveries not yet due; the earliest scheduled retry is
-- found the same way, one lookup per priority.
DROP INDEX walhook.deliveries_claim;
CREATE INDEX deliveries_claim ON walhook.deliveries (subscription_id, priority, next_attempt_at, id)
    WHERE phase = 'open';

-- Failed tries at a backfill's current chunk, in a row: reset when a chunk
-- is written; at five the backfill is marked failed with the last error.
ALTER TABLE walhook.backfill_jobs ADD COLUMN failures integer NOT NULL DEFAULT 0;

-- As before, with `failures` and `updated_at` (the last progress or
-- failure) at the end. While a backfill runs, `error` is the error of the
-- last failed try, if the current chunk failed; once failed, why.
CREATE OR REPLACE VIEW walhook.backfills AS
SELECT b.id,
       b.table_name,
       b.subscription_id,
       b.state,
       b.rows_done,
       b.rows_sent,
       b.rows_estimated,
       CASE WHEN b.started_at IS NOT NULL
                 AND coalesce(b.finished_at, b.updated_at) > b.started_at
            THEN round((b.rows_done / extract(epoch FROM coalesce(b.finished_at, b.updated_at) - b.started_at))::numeric, 1)
       END AS rows_per_second,
       b.chunk_size,
       b.error,
       b.created_at,
       b.started_at,
       b.finished_at,
       b.failures,
       b.updated_at
FROM walhook.backfill_jobs b
ORDER BY b.id;
