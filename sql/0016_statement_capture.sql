-- Statement capture: in trigger mode, an INSERT or DELETE statement on a
-- plain table writes ONE walhook.capture row, holding all the rows it
-- changed (from the statement's transition table), instead of one trigger
-- call and one capture row per changed row. A 1,000-row insert then costs
-- one function call, one capture row and one wake-up.
--
-- Each changed row is kept in its composite text form (`row::text`), which
-- renders every column with its type's output function under the same
-- settings as before: the text logical replication sends, so both capture
-- modes still share one value mapping. The column names are kept once per
-- statement (statement_columns); the relay splits statement_rows into one
-- change per element, in transition-table order. The names are the
-- trigger's arguments, kept equal to the table's columns by the event
-- trigger walhook_follow_capture_form after any DDL: looking them up in the
-- catalog on every statement would cost a single-row insert more than its
-- whole row trigger did.
--
-- UPDATE stays on the row trigger: a statement's OLD and NEW transition
-- tables are not paired row by row, and pairing them by key would be wrong
-- for a statement that changes a key. TRUNCATE stays as it was. Within one
-- INSERT ... ON CONFLICT DO UPDATE the updated rows (row trigger) are now
-- captured before the inserted ones (statement triggers fire after the
-- statement's row triggers): they are different rows, so no row's own
-- changes change order, and statements keep their order.
--
-- Where a statement trigger would miss rows, the row triggers stay:
--   a partition, or a partitioned table: Postgres fires a partition's
--     statement triggers only for statements that name the partition, and
--     a partitioned table's transition tables carry its partitions' rows
--     under the parent's name, where the row trigger names the partition;
--   a table in an inheritance tree (parent or child): the same, for
--     statements on the parent that reach the children.
-- A table that becomes one of these after it is watched (ALTER TABLE ...
-- ATTACH PARTITION, INHERIT, CREATE TABLE ... INHERITS) gets its row
-- triggers back from the event trigger walhook_follow_capture_form, in the
-- same transaction; one that leaves them gets the statement triggers.
-- Without that event trigger (it needs a superuser) every table keeps the
-- row triggers.

ALTER TABLE walhook.capture
    ADD COLUMN statement_columns text[],
    ADD COLUMN statement_rows text[];

-- A statement's rows are written once and read once: compressing them
-- costs the writing transaction more than the bytes it saves.
ALTER TABLE walhook.capture ALTER COLUMN statement_rows SET STORAGE EXTERNAL;

COMMENT ON COLUMN walhook.capture.statement_columns IS
    'Statement capture: the names of the columns in each element of statement_rows, in order';
COMMENT ON COLUMN walhook.capture.statement_rows IS
    'Statement capture: every row the statement inserted or deleted, each in composite text form; NULL for a row capture';

-- Whether rel is captured by statement triggers (trigger mode): a plain
-- table outside any partition or inheritance tree, in a database where
-- the event trigger that follows those trees exists.
CREATE FUNCTION walhook.statement_capture_fits(rel regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_class c
        WHERE c.oid = rel AND c.relkind = 'r' AND NOT c.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = rel OR i.inhparent = rel)
          AND EXISTS (SELECT 1 FROM pg_event_trigger e
                      WHERE e.evtname = 'walhook_follow_capture_form' AND e.evtenabled <> 'D'))
$$;

-- Whether rel has walhook's statement triggers now.
CREATE FUNCTION walhook.has_statement_capture(rel regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = 'walhook_capture_insert')
$$;

-- As in 0002, with the statement triggers' names.
CREATE OR REPLACE FUNCTION walhook.drop_capture_triggers(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT tgname FROM pg_trigger
                WHERE tgrelid = rel AND tgname IN ('walhook_capture', 'walhook_capture_truncate',
                                                   'walhook_capture_insert', 'walhook_capture_delete') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', name, rel);
    END LOOP;
END $$;

-- The arguments of rel's statement triggers, as SQL literals: its column
-- names in table order, each element of statement_rows having one field per
-- name; or, where columns are excluded, the excluded columns' names (the
-- other columns are then looked up per statement).
CREATE FUNCTION walhook.statement_capture_arguments(rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN cardinality(walhook.excluded_attnums(rel)) > 0
                THEN (SELECT string_agg(quote_literal(name), ', ') FROM unnest(walhook.excluded_names(rel)) AS name)
                ELSE (SELECT coalesce(string_agg(quote_literal(a.attname::text), ', ' ORDER BY a.attnum), '')
                      FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
           END
$$;

-- Whether rel's statement triggers have the arguments they should have
-- now: false after a column was added, dropped or renamed.
CREATE FUNCTION walhook.statement_capture_current(rel regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_trigger t
        WHERE t.tgrelid = rel AND t.tgname = 'walhook_capture_insert'
          AND t.tgargs = (SELECT coalesce(string_agg(decode(encode(convert_to(name, 'UTF8'), 'hex') || '00', 'hex'), ''::bytea
                                                     ORDER BY place), ''::bytea)
                          FROM unnest(CASE WHEN cardinality(walhook.excluded_attnums(rel)) > 0
                                           THEN walhook.excluded_names(rel)
                                           ELSE ARRAY(SELECT a.attname::text FROM pg_attribute a
                                                      WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
                                                      ORDER BY a.attnum) END) WITH ORDINALITY AS n(name, place)))
$$;

-- As in 0014, with statement triggers for INSERT and DELETE where they fit.
-- The row triggers get the excluded columns' names as arguments.
CREATE OR REPLACE FUNCTION walhook.install_capture_triggers(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    arguments text;
    statement_function text := 'walhook.capture_statement';
    -- The DDL below must not make walhook_follow_capture_form reinstall
    -- the triggers half way through.
    installing text := current_setting('walhook.installing_capture', true);
BEGIN
    PERFORM set_config('walhook.installing_capture', 'on', true);
    SELECT string_agg(quote_literal(name), ', ') INTO arguments
    FROM unnest(walhook.excluded_names(rel)) AS name;
    arguments := coalesce(arguments, '');
    PERFORM walhook.drop_capture_triggers(rel);
    IF walhook.statement_capture_fits(rel) THEN
        IF cardinality(walhook.excluded_attnums(rel)) > 0 THEN
            statement_function := 'walhook.capture_statement_excluding';
        END IF;
        EXECUTE format('CREATE TRIGGER walhook_capture AFTER UPDATE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION walhook.capture_change(%s)', rel, arguments);
        EXECUTE format('CREATE TRIGGER walhook_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                       rel, statement_function, walhook.statement_capture_arguments(rel));
        EXECUTE format('CREATE TRIGGER walhook_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                       rel, statement_function, walhook.statement_capture_arguments(rel));
    ELSE
        EXECUTE format('CREATE TRIGGER walhook_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION walhook.capture_change(%s)', rel, arguments);
    END IF;
    EXECUTE format('CREATE TRIGGER walhook_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION walhook.capture_change()', rel);
    PERFORM set_config('walhook.installing_capture', coalesce(installing, ''), true);
END $$;

-- The statement triggers' function: the rows the statement inserted
-- (new_rows) or deleted (old_rows) in capture rows of at most 1,000, in
-- the statement's order; none when it changed none. The relay reads a
-- capture row whole, so the chunks bound its batches and its memory when a
-- statement (or a COPY) changes millions of rows. The arguments are the
-- table's column names, the fields of each row's composite text. The
-- common case, up to 1,000 rows, is one statement with no window or sort.
CREATE FUNCTION walhook.capture_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    actor text := nullif(current_setting('walhook.actor', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, statement_columns, statement_rows, actor)
        SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', TG_ARGV, s.texts, actor
        FROM (SELECT array_agg((n.*)::text) AS texts FROM new_rows n
              WHERE (SELECT count(*) FROM new_rows) <= 1000) s
        WHERE s.texts IS NOT NULL;
        IF NOT FOUND THEN
            INSERT INTO walhook.capture (relid, schema_name, table_name, action, statement_columns, statement_rows, actor)
            SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', TG_ARGV, c.texts, actor
            FROM (SELECT (x.place - 1) / 1000 AS chunk, array_agg(x.text ORDER BY x.place) AS texts
                  FROM (SELECT (n.*)::text AS text, row_number() OVER () AS place FROM new_rows n) x
                  GROUP BY 1) c
            ORDER BY c.chunk;
        END IF;
    ELSE
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, statement_columns, statement_rows, actor)
        SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', TG_ARGV, s.texts, actor
        FROM (SELECT array_agg((o.*)::text) AS texts FROM old_rows o
              WHERE (SELECT count(*) FROM old_rows) <= 1000) s
        WHERE s.texts IS NOT NULL;
        IF NOT FOUND THEN
            INSERT INTO walhook.capture (relid, schema_name, table_name, action, statement_columns, statement_rows, actor)
            SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', TG_ARGV, c.texts, actor
            FROM (SELECT (x.place - 1) / 1000 AS chunk, array_agg(x.text ORDER BY x.place) AS texts
                  FROM (SELECT (o.*)::text AS text, row_number() OVER () AS place FROM old_rows o) x
                  GROUP BY 1) c
            ORDER BY c.chunk;
        END IF;
    END IF;
    IF FOUND THEN
        -- Only a wake-up, one per statement: the relay reads the table.
        PERFORM pg_notify('walhook_capture', '');
    END IF;
    RETURN NULL;
END $$;

-- The same, for a table with excluded columns (the arguments): only the
-- other columns are rendered, by a statement built from the catalog.
CREATE FUNCTION walhook.capture_statement_excluding() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    actor text := nullif(current_setting('walhook.actor', true), '');
    excluded text[] := TG_ARGV;
    names text[];
    texts text[];
BEGIN
    -- Arguments that are no longer all column names (a rename or drop no
    -- event trigger followed) are looked up again by column number.
    IF EXISTS (SELECT 1 FROM unnest(excluded) AS e(name)
               WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = TG_RELID AND a.attname = e.name
                                   AND a.attnum > 0 AND NOT a.attisdropped)) THEN
        excluded := coalesce(nullif(walhook.excluded_names(TG_RELID::regclass), '{}'), excluded);
    END IF;
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO names
    FROM pg_attribute a
    WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (excluded);
    EXECUTE format('SELECT array_agg(ROW(%s)::text) FROM %I n',
                   coalesce((SELECT string_agg('n.' || quote_ident(name), ', ') FROM unnest(names) AS name), ''),
                   CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
        INTO texts;
    IF texts IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO walhook.capture (relid, schema_name, table_name, action, statement_columns, statement_rows, actor)
    SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP), names, c.texts, actor
    FROM (SELECT (u.place - 1) / 1000 AS chunk, array_agg(u.text ORDER BY u.place) AS texts
          FROM unnest(texts) WITH ORDINALITY AS u(text, place)
          GROUP BY 1) c
    ORDER BY c.chunk;
    PERFORM pg_notify('walhook_capture', '');
    RETURN NULL;
END $$;

-- The same rendering settings as capture_change (0002): the text of each
-- value must not depend on the writer's session.
ALTER FUNCTION walhook.capture_statement()
    SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'iso_8601' SET TimeZone = 'UTC'
    SET extra_float_digits = 3 SET bytea_output = 'hex' SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.capture_statement_excluding()
    SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'iso_8601' SET TimeZone = 'UTC'
    SET extra_float_digits = 3 SET bytea_output = 'hex' SET search_path = pg_catalog, pg_temp;

-- ddl_command_end of any command (trigger mode): every watched table
-- whose capture triggers are not what it needs now gets them reinstalled:
-- a table attached as a partition or now in an inheritance tree needs its
-- row triggers back, one that left the tree can have statement triggers,
-- and the statement triggers' column names follow every change of the
-- table's columns, whichever command made it (ALTER TABLE, or a DROP TYPE
-- ... CASCADE that dropped a column). Every command, since so many can
-- change a table's columns; the check reads the catalog for the watched
-- tables only.
CREATE FUNCTION walhook.follow_capture_form() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass;
BEGIN
    IF current_setting('walhook.installing_capture', true) = 'on'
       OR to_regclass('walhook.watched') IS NULL
       OR walhook.capture_mode() IS DISTINCT FROM 'trigger' THEN
        RETURN;
    END IF;
    FOR rel IN SELECT w.relid FROM walhook.watched w
               WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.relid)
                 AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = w.relid AND t.tgname = 'walhook_capture')
                 AND (walhook.has_statement_capture(w.relid) <> walhook.statement_capture_fits(w.relid)
                      OR (walhook.has_statement_capture(w.relid) AND NOT walhook.statement_capture_current(w.relid))) LOOP
        PERFORM walhook.install_capture_triggers(rel);
    END LOOP;
END $$;

ALTER FUNCTION walhook.follow_capture_form() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Like walhook's other event triggers, this one needs a superuser; without
-- it statement_capture_fits is false everywhere and the row triggers stay.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER walhook_follow_capture_form ON ddl_command_end
            EXECUTE FUNCTION walhook.follow_capture_form();
    END IF;
END $$;

-- Tables watched before this migration get the form that fits them.
DO $$
DECLARE
    rel regclass;
BEGIN
    IF walhook.capture_mode() IS NOT DISTINCT FROM 'trigger' THEN
        FOR rel IN SELECT w.relid FROM walhook.watched w
                   WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.relid) LOOP
            PERFORM walhook.install_capture_triggers(rel);
        END LOOP;
    END IF;
END $$;
