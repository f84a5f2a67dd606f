-- Capture set up by `walhook migrate`: the mode and, for replication, the
-- slot are recorded in walhook.settings (key 'capture_slot'), so that
-- walhook.watch can tell when the capture it installs has nowhere to go
-- yet: a change to a watched table is only delivered once something
-- retains it (the slot, or the capture triggers).

-- The replication slot `walhook migrate` or `walhook run` set up; NULL when
-- none was recorded (a database migrated without setting up capture).
CREATE FUNCTION walhook.capture_slot() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT value FROM walhook.settings WHERE key = 'capture_slot'
$$;

-- Why changes to watched tables are not retained yet, or NULL when they
-- are. Trigger capture writes to walhook.capture, which always exists;
-- replication capture needs its slot in this database.
CREATE FUNCTION walhook.capture_gap() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    slot text := walhook.capture_slot();
BEGIN
    IF walhook.capture_mode() <> 'replication' THEN
        RETURN NULL;
    END IF;
    IF slot IS NULL THEN
        IF EXISTS (SELECT 1 FROM pg_replication_slots
                   WHERE database = current_database() AND plugin = 'pgoutput') THEN
            RETURN NULL;
        END IF;
        RETURN 'no replication slot has been created for this database';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots
                   WHERE slot_name = slot AND database = current_database()) THEN
        RETURN format('the replication slot "%s" does not exist', slot);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION walhook.watch(table_name text, full_image boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
    kind "char";
    note text := '';
    gap text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'walhook.watch: table "%" does not exist', table_name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name an existing table, schema-qualified when it is not on the search_path, e.g. walhook.watch(''public.orders'').';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'walhook.watch: "%" is not a table (views, sequences and foreign tables have no row changes to capture)', rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF (SELECT c.relnamespace FROM pg_class c WHERE c.oid = rel) = 'walhook'::regnamespace THEN
        RAISE EXCEPTION 'walhook.watch: "%" belongs to walhook itself and cannot be watched', rel
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO walhook.watched (relid, full_image) VALUES (rel, watch.full_image)
    ON CONFLICT (relid) DO UPDATE SET full_image = EXCLUDED.full_image;
    PERFORM walhook.install_capture(rel);
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary) THEN
        note := '; it has no primary key, so a row is identified by all of its columns and the'
             || ' table''s events are delivered in one sequence (add a primary key for per-row parallelism)';
        RAISE NOTICE 'walhook.watch: % has no primary key', rel
            USING DETAIL = 'Its events still flow. Without a key a row is identified by all of its columns, so walhook delivers the table''s events in commit order as one sequence.',
                  HINT = 'Add a primary key to deliver different rows in parallel.';
    END IF;
    gap := walhook.capture_gap();
    IF gap IS NOT NULL THEN
        note := note || '; not captured yet: ' || gap;
        RAISE NOTICE 'walhook.watch: changes to % are not captured yet: %', rel, gap
            USING DETAIL = 'The capture mode is replication, and changes are retained for walhook only from when its replication slot exists. Changes committed before then are never delivered.',
                  HINT = 'Run `walhook migrate` (it creates the slot of the configured capture.slot) before writing changes that must be delivered, or `walhook migrate --mode trigger` for trigger capture.';
    END IF;
    RETURN format('watching %s (%s capture)%s', rel, walhook.capture_mode(), note);
END $$;
