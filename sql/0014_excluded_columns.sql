-- Columns that never leave the database: walhook.watch(table,
-- exclude_columns => ARRAY[...]). They are in no event, no payload, no
-- backfill read and not in the event catalog, in either capture mode:
--   trigger      the capture trigger never copies them (its arguments);
--   replication  a publication column list keeps them out of decoding where
--                Postgres allows one (15 or later, and a replica identity
--                that is the key, not FULL); otherwise the relay drops them
--                from each row as it decodes it.
-- The list is kept by column number, so a renamed column stays excluded; a
-- dropped one leaves the list. Key columns (the primary key, a replica
-- identity index) are never left out: they identify the row and order its
-- events, and Postgres requires them in a column list.

ALTER TABLE walhook.watched
    ADD COLUMN exclude_columns text[] NOT NULL DEFAULT '{}',
    ADD COLUMN exclude_attnums int2[] NOT NULL DEFAULT '{}';

COMMENT ON COLUMN walhook.watched.exclude_columns IS
    'Columns of the table that no event carries (walhook.watch''s exclude_columns), by their current names';
COMMENT ON COLUMN walhook.watched.exclude_attnums IS
    'The column numbers of exclude_columns: what walhook goes by, so renames keep a column excluded';

-- The column numbers of rel's key: the primary key and the replica
-- identity index.
CREATE FUNCTION walhook.key_attnums(rel regclass) RETURNS int2[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT k.attnum ORDER BY k.attnum), '{}')
    FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) AS k(attnum)
    WHERE i.indrelid = rel AND (i.indisprimary OR i.indisreplident) AND k.attnum > 0
$$;

-- The column numbers of rel's columns that events leave out: those
-- walhook.watch excluded that still exist and are not key columns. Empty
-- for a table that is not watched or excludes nothing.
CREATE FUNCTION walhook.excluded_attnums(rel regclass) RETURNS int2[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), '{}')
    FROM walhook.watched w
    JOIN pg_attribute a ON a.attrelid = w.relid AND a.attnum = ANY (w.exclude_attnums)
    WHERE w.relid = rel AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attnum <> ALL (walhook.key_attnums(rel))
$$;

-- The columns of rel that events carry, in table order: what the event
-- catalog describes and what a backfill reads.
CREATE FUNCTION walhook.published_columns(rel regclass)
RETURNS TABLE (attnum int2, attname name, atttypid oid, atttypmod integer, attnotnull boolean)
LANGUAGE sql STABLE AS $$
    SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attnum <> ALL (walhook.excluded_attnums(rel))
    ORDER BY a.attnum
$$;

-- The current names of the excluded columns: the capture trigger's
-- arguments.
CREATE FUNCTION walhook.excluded_names(rel regclass) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum = ANY (walhook.excluded_attnums(rel))
$$;

-- The columns (by number) of the publication column list rel should have,
-- or NULL for none (every column published; the relay drops the excluded
-- ones). A list needs Postgres 15; Postgres refuses UPDATE and DELETE on a
-- table with REPLICA IDENTITY FULL (walhook.watch's full_image) that has
-- one, and on a table without a replica identity anyway; partitions
-- publish through their root, whose list would have to suit every
-- partition's identity. A list is also fixed: it must follow ALTER TABLE
-- (an added column, a dropped one, a new key), which the event trigger
-- walhook_follow_excluded_columns does, so without it there is none.
-- Generated columns are never published in a list.
CREATE FUNCTION walhook.publication_column_list(rel regclass) RETURNS int2[]
LANGUAGE sql STABLE AS $$
    SELECT ARRAY(SELECT a.attnum FROM pg_attribute a
                 WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                   AND a.attnum <> ALL (walhook.excluded_attnums(rel))
                 ORDER BY a.attnum)
    FROM pg_class c
    WHERE c.oid = rel
      AND current_setting('server_version_num')::integer >= 150000
      AND cardinality(walhook.excluded_attnums(rel)) > 0
      AND c.relkind = 'r' AND NOT c.relispartition
      AND (c.relreplident = 'i'
           OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary)))
      AND EXISTS (SELECT 1 FROM pg_event_trigger e
                  WHERE e.evtname = 'walhook_follow_excluded_columns' AND e.evtenabled <> 'D')
$$;

-- How the excluded columns of rel are kept out in the current capture
-- mode, for walhook.watch's answer; NULL when it excludes nothing.
CREATE FUNCTION walhook.exclusion_method(rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN cardinality(walhook.excluded_attnums(rel)) = 0 THEN NULL
        WHEN walhook.capture_mode() = 'trigger' THEN 'the capture trigger never copies them'
        WHEN walhook.publication_column_list(rel) IS NOT NULL
            THEN 'a publication column list keeps them out of logical decoding'
        WHEN current_setting('server_version_num')::integer < 150000
            THEN 'the relay drops them as it decodes each row (publication column lists need Postgres 15)'
        WHEN (SELECT relreplident FROM pg_class WHERE oid = rel) = 'f'
            THEN 'the relay drops them as it decodes each row: Postgres allows no publication column list with REPLICA IDENTITY FULL (full row images)'
        ELSE 'the relay drops them as it decodes each row'
    END
$$;

-- Puts rel into the publication `walhook` with the column list it should
-- have (replication mode). `renew` re-adds it even when nothing changed:
-- the relay then gets a new Relation message for it and reloads which
-- columns to drop before it decodes a change committed afterwards.
CREATE FUNCTION walhook.publish_table(rel regclass, renew boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted int2[] := walhook.publication_column_list(rel);
    present boolean;
    current_list int2[];
BEGIN
    SELECT true INTO present FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
    WHERE p.pubname = 'walhook' AND pr.prrelid = rel;
    present := coalesce(present, false);
    IF present AND current_setting('server_version_num')::integer >= 150000 THEN
        -- prattrs exists from Postgres 15 on: read it only there.
        EXECUTE 'SELECT CASE WHEN pr.prattrs IS NOT NULL
                            THEN ARRAY(SELECT unnest(pr.prattrs::int2[]) ORDER BY 1) END
                 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                 WHERE p.pubname = ''walhook'' AND pr.prrelid = $1'
            INTO current_list USING rel;
    END IF;
    IF present AND NOT renew AND current_list IS NOT DISTINCT FROM wanted THEN
        RETURN;
    END IF;
    IF present THEN
        EXECUTE format('ALTER PUBLICATION walhook DROP TABLE %s', rel);
    END IF;
    IF wanted IS NULL THEN
        EXECUTE format('ALTER PUBLICATION walhook ADD TABLE %s', rel);
    ELSE
        EXECUTE format('ALTER PUBLICATION walhook ADD TABLE %s (%s)', rel,
                       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                        FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum = ANY (wanted)));
    END IF;
END $$;

-- The capture triggers of rel (trigger mode), with the excluded columns'
-- names as arguments.
CREATE FUNCTION walhook.install_capture_triggers(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    arguments text;
BEGIN
    SELECT string_agg(quote_literal(name), ', ') INTO arguments
    FROM unnest(walhook.excluded_names(rel)) AS name;
    PERFORM walhook.drop_capture_triggers(rel);
    EXECUTE format('CREATE TRIGGER walhook_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION walhook.capture_change(%s)', rel, coalesce(arguments, ''));
    EXECUTE format('CREATE TRIGGER walhook_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION walhook.capture_change()', rel);
END $$;

-- As in 0002, with the excluded columns: the triggers get their names,
-- the publication its column list. The replica identity is set before the
-- list is chosen, since the list depends on it.
CREATE OR REPLACE FUNCTION walhook.install_capture(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mode text := walhook.capture_mode();
    want_full boolean;
BEGIN
    SELECT full_image INTO want_full FROM walhook.watched WHERE relid = rel;
    IF mode = 'trigger' THEN
        PERFORM walhook.install_capture_triggers(rel);
        IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                   WHERE p.pubname = 'walhook' AND pr.prrelid = rel) THEN
            EXECUTE format('ALTER PUBLICATION walhook DROP TABLE %s', rel);
        END IF;
    ELSE
        PERFORM walhook.drop_capture_triggers(rel);
        PERFORM walhook.ensure_publication();
        IF want_full AND (SELECT relreplident FROM pg_class WHERE oid = rel) <> 'f' THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', rel);
        END IF;
        PERFORM walhook.publish_table(rel, false);
    END IF;
END $$;

-- As in 0002, leaving out the columns named in the trigger's arguments.
-- Its hstore variables are resolved with its own search_path (pinned
-- below to hstore's schema), which this migration's lacks: the body is
-- checked when it first runs.
SET LOCAL check_function_bodies = off;

-- Arguments that are no longer all column names (a column renamed or
-- dropped since the trigger was made, where no event trigger followed the
-- ALTER TABLE) are looked up again by column number.
CREATE OR REPLACE FUNCTION walhook.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    actor text := nullif(current_setting('walhook.actor', true), '');
    excluded text[];
    new_row hstore;
    old_row hstore;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'truncate', actor);
    ELSIF TG_NARGS = 0 THEN
        -- No excluded columns: exactly as in 0002.
        IF TG_OP = 'INSERT' THEN
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
    ELSE
        excluded := TG_ARGV;
        IF TG_OP <> 'DELETE' THEN
            new_row := hstore(NEW);
        END IF;
        IF TG_OP <> 'INSERT' THEN
            old_row := hstore(OLD);
        END IF;
        IF NOT coalesce(new_row, old_row) ?& excluded THEN
            -- The watched table: this one, or the partitioned table it is
            -- a partition of (whose columns have the same names).
            excluded := coalesce(nullif(walhook.excluded_names(
                            (SELECT w.relid FROM walhook.watched w
                             WHERE w.relid::oid = TG_RELID
                                OR w.relid::oid IN (SELECT a.relid FROM pg_partition_ancestors(TG_RELID) a)
                             ORDER BY w.relid::oid = TG_RELID DESC LIMIT 1)), '{}'), excluded);
        END IF;
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, record, old_record, actor)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP),
                hstore_to_array(new_row - excluded), hstore_to_array(old_row - excluded), actor);
    END IF;
    -- Only a wake-up: the relay reads the table, never the payload.
    PERFORM pg_notify('walhook_capture', '');
    RETURN NULL;
END $$;

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
SET LOCAL check_function_bodies = on;

-- Re-spells rel's excluded columns from their numbers: a renamed column
-- keeps its place under its new name, a dropped one leaves the list.
CREATE FUNCTION walhook.respell_excluded_columns(rel regclass) RETURNS void
LANGUAGE sql AS $$
    UPDATE walhook.watched w
    SET exclude_attnums = live.numbers, exclude_columns = live.names
    FROM (SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), '{}') AS numbers,
                 coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') AS names
          FROM walhook.watched w2
          JOIN pg_attribute a ON a.attrelid = w2.relid AND a.attnum = ANY (w2.exclude_attnums)
          WHERE w2.relid = rel AND NOT a.attisdropped) live
    WHERE w.relid = rel AND cardinality(w.exclude_attnums) > 0
      AND (w.exclude_attnums, w.exclude_columns) IS DISTINCT FROM (live.numbers, live.names)
$$;

-- Sets rel's excluded columns from `names` (NULL: keep the list it has).
-- Returns whether the list changed. Refuses names that are not columns of
-- rel and key columns.
CREATE FUNCTION walhook.set_excluded_columns(rel regclass, names text[]) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text;
    number int2;
    numbers int2[] := '{}';
    keys int2[] := walhook.key_attnums(rel);
    primary_key boolean;
    previous int2[];
BEGIN
    IF names IS NULL THEN
        PERFORM walhook.respell_excluded_columns(rel);
        RETURN false;
    END IF;
    SELECT w.exclude_attnums INTO previous FROM walhook.watched w WHERE w.relid = rel;
    FOREACH name IN ARRAY names LOOP
        IF name IS NULL THEN
            RAISE EXCEPTION 'walhook.watch: exclude_columns holds a NULL'
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = 'Name each column to leave out of events, e.g. exclude_columns => ARRAY[''password_hash''].';
        END IF;
        SELECT a.attnum INTO number FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = name AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'walhook.watch: % has no column "%"', rel, name
                USING ERRCODE = 'undefined_column',
                      DETAIL = format('Its columns: %s.', (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum)
                                                         FROM pg_attribute a
                                                         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)),
                      HINT = 'Name the columns exactly as the table spells them (case matters, no quotes).';
        END IF;
        IF number = ANY (keys) THEN
            SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary
                                                      AND number = ANY (i.indkey::int2[]))
            INTO primary_key;
            RAISE EXCEPTION 'walhook.watch: "%" is part of the % of %, so it cannot be excluded', name,
                CASE WHEN primary_key THEN 'primary key' ELSE 'replica identity index' END, rel
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Every event carries its row''s key: it identifies the row and keeps the row''s events in order, and logical replication needs it to publish updates and deletes.',
                      HINT = 'Exclude only columns outside the key.';
        END IF;
        IF number <> ALL (numbers) THEN
            numbers := numbers || number;
        END IF;
    END LOOP;
    numbers := ARRAY(SELECT unnest(numbers) ORDER BY 1);
    UPDATE walhook.watched w
    SET exclude_attnums = numbers,
        exclude_columns = ARRAY(SELECT a.attname::text FROM pg_attribute a
                                WHERE a.attrelid = rel AND a.attnum = ANY (numbers) ORDER BY a.attnum)
    WHERE w.relid = rel;
    RETURN previous IS DISTINCT FROM numbers;
END $$;

-- walhook.watch with exclude_columns: as in 0009, plus the list. NULL
-- keeps the list the table has (none when it is newly watched); '{}'
-- clears it. A changed list takes effect for changes committed after this
-- call: writers of the table wait for it to commit.
DROP FUNCTION walhook.watch(text, boolean);
DROP FUNCTION walhook.watch_table(regclass, boolean, text, text);

CREATE FUNCTION walhook.watch_table(rel regclass, full_image boolean, table_name text, shown text,
                                    exclude_columns text[])
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind "char";
    persistence "char";
    schema_name name;
    note text := '';
    prefix text;
    gap text;
    list_changed boolean;
    method text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'walhook.watch: table "%" does not exist', table_name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name an existing table, schema-qualified when it is not on the search_path, e.g. walhook.watch(''public.orders''); quote names as in SQL, e.g. ''public."Order Lines"''.';
    END IF;
    SELECT c.relkind, c.relpersistence, n.nspname INTO kind, persistence, schema_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    IF schema_name IN ('pg_catalog', 'information_schema', 'pg_toast') OR rel::oid < 16384 THEN
        RAISE EXCEPTION 'walhook.watch: % is a system catalog; only application tables can be watched', rel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name a table of your application, e.g. walhook.watch(''public.orders'').';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'walhook.watch: "%" is not a table (views, sequences and foreign tables have no row changes to capture)', rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF schema_name = 'walhook' THEN
        RAISE EXCEPTION 'walhook.watch: "%" belongs to walhook itself and cannot be watched', rel
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF persistence <> 'p' THEN
        RAISE EXCEPTION 'walhook.watch: % is a temporary or unlogged table; its changes are not in the write-ahead log', rel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Make it a logged table (ALTER TABLE ... SET LOGGED) to watch it.';
    END IF;
    -- Events carry whole rows: whoever watches a table must be able to read it.
    IF NOT has_table_privilege(walhook.calling_role(), rel, 'SELECT') THEN
        RAISE EXCEPTION 'walhook.watch: % may not read %, so it may not watch it', walhook.calling_role(), rel
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Events carry whole rows; the table''s owner can GRANT SELECT on it first.';
    END IF;
    PERFORM walhook.forget_missing_tables();
    prefix := rtrim(walhook.event_type(schema_name, (SELECT relname FROM pg_class WHERE oid = rel), ''), '.');
    INSERT INTO walhook.watched (relid, full_image, type_prefix) VALUES (rel, watch_table.full_image, prefix)
    ON CONFLICT (relid) DO UPDATE SET full_image = EXCLUDED.full_image, type_prefix = EXCLUDED.type_prefix;
    list_changed := walhook.set_excluded_columns(rel, watch_table.exclude_columns);
    IF list_changed AND walhook.capture_mode() = 'replication' THEN
        -- Writers that began before this call commit first, later ones
        -- after it: each change is decoded with one list or the other.
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', rel);
    END IF;
    PERFORM walhook.install_capture(rel);
    IF list_changed AND walhook.capture_mode() = 'replication' THEN
        PERFORM walhook.publish_table(rel, true);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary) THEN
        note := '; it has no primary key, so a row is identified by all of its columns and the'
             || ' table''s events are delivered in one sequence (add a primary key for per-row parallelism)';
        RAISE NOTICE 'walhook.watch: % has no primary key', rel
            USING DETAIL = 'Its events still flow. Without a key a row is identified by all of its columns, so walhook delivers the table''s events in commit order as one sequence.',
                  HINT = 'Add a primary key to deliver different rows in parallel.';
    END IF;
    method := walhook.exclusion_method(rel);
    IF method IS NOT NULL THEN
        note := note || format('; excluded columns: %s (%s)', array_to_string(walhook.excluded_names(rel), ', '), method);
    END IF;
    gap := walhook.capture_gap();
    IF gap IS NOT NULL THEN
        note := note || '; not captured yet: ' || gap;
        RAISE NOTICE 'walhook.watch: changes to % are not captured yet: %', shown, gap
            USING DETAIL = 'The capture mode is replication, and changes are retained for walhook only from when its replication slot exists. Changes committed before then are never delivered.',
                  HINT = 'Run `walhook migrate` (it creates the slot of the configured capture.slot) before writing changes that must be delivered, or `walhook migrate --mode trigger` for trigger capture.';
    END IF;
    RETURN format('watching %s (%s capture)%s', shown, walhook.capture_mode(), note);
END $$;

CREATE FUNCTION walhook.watch(table_name text, full_image boolean DEFAULT true,
                              exclude_columns text[] DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
BEGIN
    RETURN walhook.watch_table(rel, full_image, table_name, rel::text, exclude_columns);
END $$;

-- ddl_command_end of ALTER TABLE on a watched table: the excluded columns
-- keep their numbers and take their new names (a dropped one leaves the
-- list), the trigger arguments follow, and so does the publication's
-- column list (an added column joins it, a new key is in it, REPLICA
-- IDENTITY FULL removes it, and a DROP COLUMN ... CASCADE that took the
-- table out of the publication puts it back).
CREATE FUNCTION walhook.follow_excluded_columns() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass;
    keyed text;
BEGIN
    IF to_regclass('walhook.watched') IS NULL THEN
        RETURN;
    END IF;
    FOR rel IN SELECT DISTINCT w.relid FROM pg_event_trigger_ddl_commands() d
               JOIN walhook.watched w ON w.relid::oid = d.objid
               WHERE d.classid = 'pg_class'::regclass
                 AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.relid) LOOP
        PERFORM walhook.respell_excluded_columns(rel);
        SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) INTO keyed
        FROM walhook.watched w JOIN pg_attribute a ON a.attrelid = w.relid AND a.attnum = ANY (w.exclude_attnums)
        WHERE w.relid = rel AND a.attnum = ANY (walhook.key_attnums(rel));
        IF keyed IS NOT NULL THEN
            RAISE NOTICE 'walhook: % of % is now part of the table''s key, so its events carry it although it is excluded', keyed, rel
                USING HINT = 'Every event carries its row''s key; walhook.watched lists it under exclude_columns until it leaves the key again.';
        END IF;
        IF walhook.capture_mode() = 'trigger' THEN
            IF EXISTS (SELECT 1 FROM walhook.watched w WHERE w.relid = rel AND cardinality(w.exclude_attnums) > 0)
               OR EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = 'walhook_capture' AND t.tgnargs > 0) THEN
                PERFORM walhook.install_capture_triggers(rel);
            END IF;
        ELSE
            PERFORM walhook.ensure_publication();
            PERFORM walhook.publish_table(rel, false);
        END IF;
    END LOOP;
END $$;

-- The event catalog describes the published columns only (as in 0011).
CREATE OR REPLACE FUNCTION walhook.row_json_schema(rel regclass, complete boolean) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'type', 'object',
        'properties', coalesce(json_object_agg(a.attname::text,
                                   walhook.column_json_schema(a.atttypid, a.atttypmod, a.attnotnull)
                                   ORDER BY a.attnum), '{}'::json),
        'required', CASE WHEN complete THEN coalesce(json_agg(a.attname::text ORDER BY a.attnum), '[]'::json)
                         ELSE '[]'::json END)
    FROM walhook.published_columns(rel) a
$$;

CREATE OR REPLACE FUNCTION walhook.changes_json_schema(rel regclass) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'type', 'object',
        'properties', coalesce(json_object_agg(a.attname::text, json_build_object(
                                   'type', 'object',
                                   'required', json_build_array('old', 'new'),
                                   'properties', json_build_object(
                                       'old', walhook.column_json_schema(a.atttypid, a.atttypmod, a.attnotnull, true),
                                       'new', walhook.column_json_schema(a.atttypid, a.atttypmod, a.attnotnull)))
                                   ORDER BY a.attnum), '{}'::json))
    FROM walhook.published_columns(rel) a
$$;

ALTER FUNCTION walhook.follow_excluded_columns() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Like walhook's other event triggers, this one needs a superuser; without
-- it no publication column list is used (the relay drops the columns).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER walhook_follow_excluded_columns ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE')
            EXECUTE FUNCTION walhook.follow_excluded_columns();
    END IF;
END $$;

-- The relay reads which columns to drop and which to read in a backfill;
-- the viewer reads the event catalog.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['walhook_relay', 'walhook_viewer'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION walhook.key_attnums(regclass), walhook.excluded_attnums(regclass),
                                walhook.published_columns(regclass) TO %I', role_name);
        END IF;
    END LOOP;
END $$;
