-- Claiming a delivery (pending -> in_flight) and releasing it again change
-- only columns that no index reads, so Postgres updates the row in place (a
-- heap-only update): no new entry in any of the table's indexes, less WAL.
-- Before, every claim added four index entries, because the partial
-- indexes were keyed on `state`. They are now keyed on `phase`, which folds
-- `pending` and `in_flight` into `open` and so does not move on a claim.
--
-- A lease that ran out needs no sweep (and so no index on lease_until):
-- the claim takes over an in-flight delivery whose lease ran out as it
-- finds it, in its place in its row's order.
ALTER TABLE walhook.deliveries
    ADD COLUMN phase text GENERATED ALWAYS AS (
        CASE WHEN state IN ('pending', 'in_flight') THEN 'open' ELSE state END) STORED;

-- Room on each page for the claimed version of every row inserted there:
-- a claim takes a page's rows at once, before pruning can free their old
-- versions (at 60, about a quarter of the claims had to leave the page).
ALTER TABLE walhook.deliveries SET (fillfactor = 45);

DROP INDEX walhook.deliveries_claim;
DROP INDEX walhook.deliveries_leased;
DROP INDEX walhook.deliveries_open_by_row;
DROP INDEX walhook.deliveries_delivered_at;
DROP INDEX walhook.deliveries_dead_by_age;

-- Claiming: per subscription, the open work in order (in-flight rows are
-- passed over unless their lease ran out).
CREATE INDEX deliveries_claim ON walhook.deliveries (subscription_id, next_attempt_at, id)
    WHERE phase = 'open';
-- Per-row order: is an earlier delivery of this row still open?
CREATE INDEX deliveries_open_by_row ON walhook.deliveries (subscription_id, row_key, id)
    WHERE phase = 'open';
-- Pruning: finished history by age.
CREATE INDEX deliveries_delivered_at ON walhook.deliveries (delivered_at) WHERE phase = 'delivered';
CREATE INDEX deliveries_dead_by_age ON walhook.deliveries (created_at) WHERE phase = 'dead';
