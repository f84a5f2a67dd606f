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

-- walhook.watch raises a notice with capture_gap() (see 0009, watch_table).
