-- The event catalog (walhook.event_types: every watched table's event
-- types with the JSON Schema of their payload) and backfills (a table's
-- existing rows sent as `read` events, interleaved with live changes).

-- The event type of an action on a table (`orders.update`,
-- `audit.log.update`, `"audit.log".update`), spelled by
-- walhook.event_type; the relay's is `RowChange::event_type`.
CREATE FUNCTION walhook.event_type_of(rel regclass, action text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT walhook.event_type(n.nspname, c.relname, action)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$$;


-- The JSON Schema of a base type's values, by the type's name: the
-- mapping of `walhook::change::value` (a test compares the two for every
-- type of the database).
CREATE FUNCTION walhook.base_type_json_schema(type_name text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN type_name IN ('int2', 'int4', 'int8', 'oid', 'xid', 'xid8', 'cid')
            THEN '{"type": "integer"}'
        WHEN type_name IN ('float4', 'float8')
            THEN '{"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}'
        WHEN type_name = 'bool' THEN '{"type": "boolean"}'
        WHEN type_name IN ('json', 'jsonb') THEN '{}'
        WHEN type_name = 'timestamptz'
            THEN '{"anyOf": [{"type": "string", "format": "date-time"}, {"enum": ["infinity", "-infinity"]}]}'
        WHEN type_name = 'timestamp'
            THEN '{"type": "string", "description": "ISO 8601 date and time without offset"}'
        WHEN type_name = 'date'
            THEN '{"anyOf": [{"type": "string", "format": "date"}, {"enum": ["infinity", "-infinity"]}]}'
        WHEN type_name = 'bytea' THEN '{"type": "string", "contentEncoding": "base64"}'
        WHEN type_name = 'numeric'
            THEN '{"type": "string", "description": "exact decimal, or NaN, Infinity, -Infinity"}'
        WHEN type_name = 'interval' THEN '{"type": "string", "format": "duration"}'
        WHEN type_name = 'uuid' THEN '{"type": "string", "format": "uuid"}'
        ELSE '{"type": "string"}'
    END::json
$$;

-- The JSON Schema of a type's values: domains as their base type, arrays
-- as arrays (nested, with NULLs), enums by their labels, composites as
-- objects; anything else as the text Postgres prints.
CREATE FUNCTION walhook.type_json_schema(type_oid oid, depth integer DEFAULT 0) RETURNS json
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    t record;
BEGIN
    SELECT ty.oid, ty.typname::text AS name, ty.typtype, ty.typcategory, ty.typelem, ty.typbasetype,
           ty.typrelid, ty.typnamespace
    INTO t FROM pg_type ty WHERE ty.oid = type_oid;
    IF NOT FOUND OR depth >= 32 THEN
        RETURN '{"type": "string"}'::json;
    END IF;
    IF t.typtype = 'd' THEN
        RETURN walhook.type_json_schema(t.typbasetype, depth + 1);
    ELSIF t.typtype = 'b' AND t.typcategory = 'A' AND t.typelem <> 0 THEN
        RETURN json_build_object('type', 'array', 'items', json_build_object('anyOf', json_build_array(
            walhook.type_json_schema(t.typelem, depth + 1), '{"type": "null"}'::json, '{"type": "array"}'::json)));
    ELSIF t.typtype = 'b' THEN
        RETURN walhook.base_type_json_schema(t.name);
    ELSIF t.typtype = 'e' THEN
        RETURN json_build_object('type', 'string', 'enum',
            coalesce((SELECT json_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                      FROM pg_enum e WHERE e.enumtypid = t.oid), '[]'::json));
    ELSIF t.typtype = 'c'
          AND t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) THEN
        RETURN json_build_object('type', 'object', 'properties',
            coalesce((SELECT json_object_agg(a.attname::text, json_build_object('anyOf', json_build_array(
                                 walhook.type_json_schema(a.atttypid, depth + 1), '{"type": "null"}'::json))
                                 ORDER BY a.attnum)
                      FROM pg_attribute a
                      WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '{}'::json));
    END IF;
    RETURN '{"type": "string"}'::json;
END $$;

-- One column's schema: its type's, described by its SQL type, and
-- nullable unless the column is NOT NULL (or `nullable` says so anyway).
CREATE FUNCTION walhook.column_json_schema(type_oid oid, typmod integer, not_null boolean,
                                           nullable boolean DEFAULT false) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN not_null AND NOT nullable
                THEN json_build_object('description', format_type(type_oid, typmod),
                                       'allOf', json_build_array(walhook.type_json_schema(type_oid)))
                ELSE json_build_object('description', format_type(type_oid, typmod),
                                       'anyOf', json_build_array(walhook.type_json_schema(type_oid),
                                                                 '{"type": "null"}'::json))
           END
$$;

-- A row of `rel` as an event carries it: its columns in table order.
-- `complete`: every column is present (`record`; an `old_record` holds
-- only the key when the table is not watched with full row images).
CREATE FUNCTION walhook.row_json_schema(rel regclass, complete boolean) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'type', 'object',
        'properties', coalesce(json_object_agg(a.attname::text,
                                   walhook.column_json_schema(a.atttypid, a.atttypmod, a.attnotnull)
                                   ORDER BY a.attnum), '{}'::json),
        'required', CASE WHEN complete THEN coalesce(json_agg(a.attname::text ORDER BY a.attnum), '[]'::json)
                         ELSE '[]'::json END)
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- `changes` of an update: for each changed column its old and new value.
CREATE FUNCTION walhook.changes_json_schema(rel regclass) RETURNS json
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
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- The JSON Schema (2020-12) of the event of `action` on `rel`, exactly as
-- docs/events.md describes the event.
CREATE FUNCTION walhook.event_json_schema(rel regclass, action text) RETURNS json
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    null_schema constant json := '{"type": "null"}';
    schema_name text;
    table_name text;
    record_schema json := null_schema;
    old_schema json := null_schema;
    changes_schema json := null_schema;
BEGIN
    SELECT n.nspname::text, c.relname::text INTO schema_name, table_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    IF action IN ('insert', 'update', 'read') THEN
        record_schema := walhook.row_json_schema(rel, true);
    END IF;
    IF action = 'update' THEN
        -- Without an old row image (the key did not change and the table
        -- is not watched with full images) both are null.
        old_schema := json_build_object('anyOf', json_build_array(walhook.row_json_schema(rel, false), null_schema));
        changes_schema := json_build_object('anyOf', json_build_array(walhook.changes_json_schema(rel), null_schema));
    ELSIF action = 'delete' THEN
        old_schema := walhook.row_json_schema(rel, false);
    END IF;
    RETURN json_build_object(
        '$schema', 'https://json-schema.org/draft/2020-12/schema',
        'title', walhook.event_type_of(rel, action),
        'description', format('The %s event of table %I.%I', action, schema_name, table_name),
        'type', 'object',
        'required', json_build_array('id', 'type', 'schema', 'table', 'action', 'record', 'old_record',
                                     'changes', 'actor', 'txid', 'lsn', 'committed_at'),
        'properties', json_build_object(
            'id', json_build_object('type', 'string', 'pattern', '^evt_[0-9A-HJKMNP-TV-Z]{26}$',
                                    'description', 'stable event id, also the webhook-id header'),
            'type', json_build_object('const', walhook.event_type_of(rel, action)),
            'schema', json_build_object('const', schema_name),
            'table', json_build_object('const', table_name),
            'action', json_build_object('const', action),
            'record', record_schema,
            'old_record', old_schema,
            'changes', changes_schema,
            'actor', json_build_object('type', json_build_array('string', 'null')),
            'txid', json_build_object('type', 'integer', 'minimum', 0),
            'lsn', json_build_object('type', json_build_array('string', 'null'),
                                     'pattern', '^[0-9A-F]+/[0-9A-F]+$'),
            'committed_at', json_build_object('type', 'string', 'format', 'date-time')));
END $$;

-- The event catalog: every event type of every watched table, the JSON
-- Schema of its payload, and the subscriptions whose patterns match it.
-- Built from the system catalogs on every read, so a column added to a
-- watched table is in it at once.
CREATE VIEW walhook.event_types AS
SELECT walhook.event_type_of(w.relid, a.action) AS event_type,
       n.nspname::text AS schema_name,
       c.relname::text AS table_name,
       a.action,
       walhook.event_json_schema(w.relid, a.action) AS payload_schema,
       ARRAY(SELECT s.id FROM walhook.subscriptions s
             WHERE walhook.event_matches(walhook.event_type_of(w.relid, a.action), s.events)
             ORDER BY s.id) AS subscriptions
FROM walhook.watched w
JOIN pg_class c ON c.oid = w.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest(ARRAY['insert', 'update', 'delete', 'truncate', 'read']) WITH ORDINALITY AS a(action, position)
ORDER BY n.nspname, c.relname, a.position;

-- Backfills: a table's existing rows sent as `read` events. The relay
-- that captures reads them in primary-key order, a chunk at a time, each
-- chunk in a statement of its own, and records here after every chunk how
-- far it got: a relay that stops resumes after the last chunk it wrote.
CREATE TABLE walhook.backfill_jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid           oid NOT NULL,
    table_name      text NOT NULL,
    subscription_id bigint,
    chunk_size      integer NOT NULL
        CONSTRAINT backfill_chunk_size_in_range CHECK (chunk_size BETWEEN 1 AND 100000),
    state           text NOT NULL DEFAULT 'pending'
        CONSTRAINT backfill_state_known CHECK (state IN ('pending', 'running', 'done', 'cancelled', 'failed')),
    -- the primary key values (as text) of the last row done; NULL before the first chunk
    last_key        text[],
    rows_done       bigint NOT NULL DEFAULT 0,
    rows_sent       bigint NOT NULL DEFAULT 0,
    rows_estimated  bigint,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- Each backfill: its table, subscription (NULL: every subscription whose
-- patterns match `<table>.read`), progress and rate.
CREATE VIEW walhook.backfills AS
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
       b.finished_at
FROM walhook.backfill_jobs b
ORDER BY b.id;

-- Starts a backfill of `table_name`; returns its id. A running relay
-- begins at once (the capturing one sends the reads).
-- The name is resolved with the caller's search_path in walhook.backfill;
-- the work runs as walhook's owner in backfill_table.
CREATE FUNCTION walhook.backfill_table(rel regclass, table_name text, subscription_id bigint,
                                       chunk_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    estimate real;
    new_id bigint;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'walhook.backfill: table "%" does not exist', table_name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name an existing table, schema-qualified when it is not on the search_path, e.g. walhook.backfill(''public.orders'').';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM walhook.watched w WHERE w.relid = rel) THEN
        RAISE EXCEPTION 'walhook.backfill: % is not watched', rel
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A backfill interleaves the existing rows with the table''s live changes, which walhook sees only for watched tables.',
                  HINT = format('SELECT walhook.watch(%L) first.', rel::text);
    END IF;
    -- Reads carry whole rows: whoever starts one must be able to read them.
    IF NOT has_table_privilege(walhook.calling_role(), rel, 'SELECT') THEN
        RAISE EXCEPTION 'walhook.backfill: % may not read %, so it may not backfill it', walhook.calling_role(), rel
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The table''s owner can GRANT SELECT on it first.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary) THEN
        RAISE EXCEPTION 'walhook.backfill: % has no primary key', rel
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A backfill reads rows in primary-key order, a chunk at a time, and tells a read row from a changed one by its key; without a key it could do neither.',
                  HINT = 'Add a primary key to the table, then start the backfill again.';
    END IF;
    IF subscription_id IS NOT NULL THEN
        PERFORM walhook.require_subscription(subscription_id, 'walhook.backfill');
    END IF;
    IF chunk_size IS NULL OR chunk_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'walhook.backfill: chunk_size must be between 1 and 100000, not %', chunk_size
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The default, 1000, reads 1000 rows per statement.';
    END IF;
    SELECT c.reltuples INTO estimate FROM pg_class c WHERE c.oid = rel;
    INSERT INTO walhook.backfill_jobs (relid, table_name, subscription_id, chunk_size, rows_estimated)
    VALUES (rel, backfill_table.table_name, backfill_table.subscription_id, backfill_table.chunk_size,
            CASE WHEN estimate >= 0 THEN estimate::bigint END)
    RETURNING id INTO new_id;
    PERFORM pg_notify('walhook_backfills', new_id::text);
    RETURN new_id;
END $$;

CREATE FUNCTION walhook.backfill(table_name text, subscription_id bigint DEFAULT NULL,
                                 chunk_size integer DEFAULT 1000) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    -- The table as the caller names it (resolved with the caller's search_path).
    RETURN walhook.backfill_table(to_regclass(table_name),
                                  coalesce(to_regclass(table_name)::text, table_name),
                                  subscription_id, chunk_size);
END $$;

-- Stops a backfill that is pending or running; what it sent stays sent.
CREATE FUNCTION walhook.cancel_backfill(id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_state text;
BEGIN
    SELECT b.state INTO current_state FROM walhook.backfill_jobs b WHERE b.id = cancel_backfill.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'walhook.cancel_backfill: there is no backfill with id %', cancel_backfill.id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT * FROM walhook.backfills lists them.';
    END IF;
    IF current_state IN ('pending', 'running') THEN
        UPDATE walhook.backfill_jobs b SET state = 'cancelled', finished_at = now(), updated_at = now()
        WHERE b.id = cancel_backfill.id;
    ELSE
        RAISE NOTICE 'walhook.cancel_backfill: backfill % is already %', cancel_backfill.id, current_state;
    END IF;
END $$;

-- A backfill's high watermark, committed in its own transaction after a
-- chunk was read: in the change stream, every change committed before it
-- comes before it. Replication capture reads it as a logical message;
-- trigger capture as a row of walhook.capture, ordered by capture id.
CREATE FUNCTION walhook.backfill_watermark(token text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF walhook.capture_mode() = 'trigger' THEN
        INSERT INTO walhook.capture (relid, schema_name, table_name, action, record)
        VALUES (0, 'walhook', 'watermark', 'watermark', ARRAY[token]);
        PERFORM pg_notify('walhook_capture', '');
    ELSE
        PERFORM pg_logical_emit_message(true, 'walhook.watermark', token);
    END IF;
END $$;

-- walhook_admin starts and cancels backfills without writing walhook's
-- tables itself; the relay writes watermarks through the function.
ALTER FUNCTION walhook.cancel_backfill(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.backfill_watermark(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_relay') THEN
        GRANT EXECUTE ON FUNCTION walhook.backfill_watermark(text) TO walhook_relay;
    END IF;
END $$;
