-- Capture setup: which tables are watched and how their changes are read.
-- In `trigger` mode a row trigger appends each change to walhook.capture
-- inside the writing transaction; in `replication` mode the table joins the
-- publication `walhook` and is read from the write-ahead log.

-- hstore(record) renders every column with its type's output function:
-- the same text that logical replication sends, so both modes share one
-- value mapping.
CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA walhook;

CREATE TABLE walhook.capture (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    relid       oid NOT NULL,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    action      text NOT NULL,
    -- alternating column names and values (NULL for SQL NULL)
    record      text[],
    old_record  text[],
    actor       text,
    captured_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION walhook.capture_mode() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT value FROM walhook.settings WHERE key = 'capture_mode'
$$;

CREATE FUNCTION walhook.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    actor text := nullif(current_setting('walhook.actor', true), '');
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'truncate', actor);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, record, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', hstore_to_array(hstore(NEW)), actor);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, record, old_record, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'update',
                hstore_to_array(hstore(NEW)), hstore_to_array(hstore(OLD)), actor);
    ELSE
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, old_record, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', hstore_to_array(hstore(OLD)), actor);
    END IF;
    -- Only a wake-up: the relay reads the table, never the payload.
    PERFORM pg_notify('walhook_capture', '');
    RETURN NULL;
END $$;

-- hstore may already live in another schema (managed databases often keep
-- extensions in `extensions`): pin the trigger function's search_path to it.
-- The output settings are pinned too, so a value's text is the same
-- whatever the writing session's DateStyle, TimeZone or IntervalStyle, and
-- the same as logical replication sends under the relay's settings.
ALTER FUNCTION walhook.capture_change()
    SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'iso_8601' SET TimeZone = 'UTC'
    SET extra_float_digits = 3 SET bytea_output = 'hex';
DO $$
DECLARE
    ns text;
BEGIN
    SELECT extnamespace::regnamespace::text INTO ns FROM pg_extension WHERE extname = 'hstore';
    EXECUTE format('ALTER FUNCTION walhook.capture_change() SET search_path = pg_catalog, %s, pg_temp', ns);
END $$;

CREATE FUNCTION walhook.drop_capture_triggers(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT tgname FROM pg_trigger
                WHERE tgrelid = rel AND tgname IN ('walhook_capture', 'walhook_capture_truncate') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', name, rel);
    END LOOP;
END $$;

-- Makes `rel` captured the way the current capture mode needs, and removes
-- the other mode's setup.
CREATE FUNCTION walhook.install_capture(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mode text := walhook.capture_mode();
    want_full boolean;
BEGIN
    SELECT full_image INTO want_full FROM walhook.watched WHERE relid = rel;
    PERFORM walhook.drop_capture_triggers(rel);
    IF mode = 'trigger' THEN
        EXECUTE format('CREATE TRIGGER walhook_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION walhook.capture_change()', rel);
        EXECUTE format('CREATE TRIGGER walhook_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION walhook.capture_change()', rel);
        IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                   WHERE p.pubname = 'walhook' AND pr.prrelid = rel) THEN
            EXECUTE format('ALTER PUBLICATION walhook DROP TABLE %s', rel);
        END IF;
    ELSE
        PERFORM walhook.ensure_publication();
        IF NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                       WHERE p.pubname = 'walhook' AND pr.prrelid = rel) THEN
            EXECUTE format('ALTER PUBLICATION walhook ADD TABLE %s', rel);
        END IF;
        IF want_full THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', rel);
        END IF;
    END IF;
END $$;

CREATE FUNCTION walhook.ensure_publication() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'walhook') THEN
        CREATE PUBLICATION walhook WITH (publish_via_partition_root = true);
    END IF;
END $$;

-- Switches every watched table to `mode` ('replication' or 'trigger').
-- `walhook run` calls this when its configured mode differs.
CREATE FUNCTION walhook.set_capture_mode(mode text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass;
BEGIN
    IF mode IS NULL OR mode NOT IN ('replication', 'trigger') THEN
        RAISE EXCEPTION 'walhook.set_capture_mode: unknown capture mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''replication'' (logical replication, the default) or ''trigger''.';
    END IF;
    UPDATE walhook.settings SET value = mode WHERE key = 'capture_mode';
    FOR rel IN SELECT relid FROM walhook.watched LOOP
        PERFORM walhook.install_capture(rel);
    END LOOP;
END $$;

CREATE FUNCTION walhook.watch(table_name text, full_image boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
    kind "char";
    note text := '';
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
    RETURN format('watching %s (%s capture)%s', rel, walhook.capture_mode(), note);
END $$;

CREATE FUNCTION walhook.unwatch(table_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
BEGIN
    IF rel IS NULL OR NOT EXISTS (SELECT 1 FROM walhook.watched w WHERE w.relid = rel) THEN
        RAISE EXCEPTION 'walhook.unwatch: table "%" is not watched', table_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT relid FROM walhook.watched lists the watched tables.';
    END IF;
    PERFORM walhook.drop_capture_triggers(rel);
    IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
               WHERE p.pubname = 'walhook' AND pr.prrelid = rel) THEN
        EXECUTE format('ALTER PUBLICATION walhook DROP TABLE %s', rel);
    END IF;
    DELETE FROM walhook.watched w WHERE w.relid = rel;
    RETURN format('no longer watching %s', rel);
END $$;

-- The actor of the current transaction: on every event it produces, in
-- both capture modes (a transaction-local setting for triggers, a
-- transactional logical message for replication).
CREATE FUNCTION walhook.set_actor(actor text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('walhook.actor', coalesce(actor, ''), true);
    PERFORM pg_logical_emit_message(true, 'walhook.actor', coalesce(actor, ''));
END $$;
