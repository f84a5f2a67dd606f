-- Statistics the relay keeps right itself. An outbox analyzed while it was
-- empty (a new install, a quiet spell, pruning) or never analyzed gets
-- plans for a table of a few rows; after a burst those plans walk every
-- delivery ever written on each claim, and autovacuum corrects them only
-- when its launcher next visits the database (a minute by default, which
-- no per-table setting shortens). The relay calls this every second:
-- a table whose pages have more than doubled since its last analyze (and
-- number more than 16) is analyzed at once, and so is `deliveries` when
-- twice as many deliveries are open as that analyze saw. It runs as walhook's
-- owner, so the relay role needs no ownership of the tables.
CREATE OR REPLACE FUNCTION walhook.analyze_grown_outbox() RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    analyzed text[] := ARRAY[]::text[];
    t record;
    open_estimate float4;
    enough int;
    open_now bigint;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS rel
        FROM pg_class c
        WHERE c.oid IN ('walhook.deliveries'::regclass, 'walhook.events'::regclass)
          -- Its size on disk, not the statistics collector's row counts,
          -- which reach the collector seconds late.
          AND pg_relation_size(c.oid) / current_setting('block_size')::int
              > 2 * greatest(c.relpages, 0) + 16
    LOOP
        EXECUTE format('ANALYZE %s', t.rel);
        analyzed := analyzed || t.rel::text;
    END LOOP;
    -- Analyzed while (nearly) nothing was open, then a burst into space
    -- that pruning or delivery freed: the table does not grow, but the
    -- claim plans for one open delivery. The partial index's estimate is
    -- what ANALYZE saw open; counting stops once twice that is reached.
    SELECT c.reltuples INTO open_estimate FROM pg_class c
    WHERE c.oid = 'walhook.deliveries_claim'::regclass;
    IF open_estimate >= 0 AND open_estimate < 10000
       AND NOT 'walhook.deliveries' = ANY (analyzed) THEN
        enough := (2 * open_estimate + 1000)::int;
        SELECT count(*) INTO open_now
        FROM (SELECT 1 FROM walhook.deliveries WHERE phase = 'open' LIMIT enough) o;
        IF open_now >= enough THEN
            ANALYZE walhook.deliveries;
            analyzed := analyzed || 'walhook.deliveries'::text;
        END IF;
    END IF;
    RETURN analyzed;
END $$;

REVOKE ALL ON FUNCTION walhook.analyze_grown_outbox() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_relay') THEN
        GRANT EXECUTE ON FUNCTION walhook.analyze_grown_outbox() TO walhook_relay;
    END IF;
END $$;
