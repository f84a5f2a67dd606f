-- A safe SQL surface: event types that never name two tables alike,
-- subscriptions validated by walhook before any constraint (whose DETAIL
-- would list the row, secret included), bounds on every input, dropped and
-- renamed tables handled, and the roles walhook_admin, walhook_viewer and
-- walhook_relay.

------------------------------------------------------------------------
-- Event types and patterns
------------------------------------------------------------------------

-- One part of an event type: the name itself when it is a plain lowercase
-- identifier, else double-quoted with inner quotes doubled, as in SQL.
-- src/event_type.rs implements the same rule.
CREATE FUNCTION walhook.quote_event_part(name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN name ~ '^[a-z_][a-z0-9_$]*$' THEN name
                ELSE '"' || replace(name, '"', '""') || '"' END
$$;

-- The event type of `action` on table `schema_name.table_name`:
-- `orders.insert`, `audit.log.insert`, `"audit.log".insert`.
CREATE FUNCTION walhook.event_type(schema_name text, table_name text, action text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN schema_name = 'public' THEN '' ELSE walhook.quote_event_part(schema_name) || '.' END
           || walhook.quote_event_part(table_name) || '.' || action
$$;

-- The parts of an event type or pattern, unquoted, with NULL for an
-- unquoted `*`; NULL when the text is not well formed (an empty part, an
-- unclosed quote, whitespace or a quote in an unquoted part).
CREATE FUNCTION walhook.event_type_parts(text text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    -- Nearly every type and pattern has no quotes: split it plainly.
    IF strpos(text, '"') = 0 THEN
        IF text !~ '^[^.[:space:]]+(\.[^.[:space:]]+)*$' THEN
            RETURN NULL;
        END IF;
        RETURN array_replace(string_to_array(text, '.'), '*', NULL);
    END IF;
    IF text !~ '^("([^"]|"")+"|[^."[:space:]]+)(\.("([^"]|"")+"|[^."[:space:]]+))*$' THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT CASE WHEN m.part[1] = '*' THEN NULL
                             WHEN left(m.part[1], 1) = '"'
                                 THEN replace(substr(m.part[1], 2, length(m.part[1]) - 2), '""', '"')
                             ELSE m.part[1] END
                 FROM regexp_matches(text, '("(?:[^"]|"")+"|[^."[:space:]]+)', 'g')
                      WITH ORDINALITY AS m(part, n)
                 ORDER BY m.n);
END $$;

-- A pattern as (schema, table, action), NULL for "any": `orders.*` is
-- (public, orders, any), `*.delete` (any, any, delete), `*` (any, any, any).
-- NULL when the pattern is not well formed.
CREATE FUNCTION walhook.pattern_parts(pattern text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    p text[] := walhook.event_type_parts(pattern);
BEGIN
    RETURN CASE
        WHEN cardinality(p) = 1 AND p[1] IS NULL THEN ARRAY[NULL, NULL, NULL]::text[]
        WHEN cardinality(p) = 2 THEN ARRAY[CASE WHEN p[1] IS NOT NULL THEN 'public' END, p[1], p[2]]
        WHEN cardinality(p) = 3 THEN p
    END;
END $$;

-- Does event type `event_type` match one subscription pattern? Both are
-- split into parts by the same quoting rules and compared part by part;
-- src/route.rs does the same.
CREATE OR REPLACE FUNCTION walhook.event_type_matches(event_type text, pattern text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    ev text[] := walhook.event_type_parts(event_type);
    pat text[];
BEGIN
    IF cardinality(ev) = 2 THEN
        ev := ARRAY['public'] || ev;
    END IF;
    IF cardinality(ev) IS DISTINCT FROM 3 OR array_position(ev, NULL) IS NOT NULL THEN
        RETURN false;
    END IF;
    pat := walhook.pattern_parts(pattern);
    RETURN coalesce(cardinality(pat) = 3
                    AND (pat[1] IS NULL OR pat[1] = ev[1])
                    AND (pat[2] IS NULL OR pat[2] = ev[2])
                    AND (pat[3] IS NULL OR pat[3] = ev[3]), false);
END $$;

-- Every pattern well formed, with a known action (or `*`).
CREATE OR REPLACE FUNCTION walhook.valid_event_patterns(patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT cardinality(patterns) > 0
       AND NOT EXISTS (
           SELECT 1 FROM unnest(patterns) AS p
           WHERE p IS NULL
              OR walhook.pattern_parts(p) IS NULL
              OR coalesce((walhook.pattern_parts(p))[3], 'insert')
                     NOT IN ('insert', 'update', 'delete', 'truncate', 'read'))
$$;

------------------------------------------------------------------------
-- Subscriptions: validated by walhook, within bounds, before constraints
------------------------------------------------------------------------

-- The bounds a subscription must keep; every refusal names its limit.
CREATE FUNCTION walhook.limits() RETURNS TABLE (name text, value text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('url_length', '2048'), ('host_length', '253'), ('patterns', '100'),
           ('pattern_length', '500'), ('secret_min_length', '8'), ('secret_max_length', '512'),
           ('max_attempts', '1000'), ('batch_size', '1000'), ('max_in_flight', '10000'),
           ('max_per_second', '100000'), ('retry_delays', '100'), ('retry_delay', '3 days'),
           ('description_length', '1000')
$$;

-- The host of an http(s) URL, without brackets around an IPv6 address.
CREATE FUNCTION walhook.url_host(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT btrim(substring(url from '^[a-zA-Z]+://(?:[^@/?#]*@)?(\[[^]]*\]|[^:/?#]*)'), '[]')
$$;

-- Why `host` is a private, loopback or link-local address, or NULL when it
-- is a name or a public address. Names are resolved only at delivery.
CREATE FUNCTION walhook.private_address_kind(host text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    address inet;
BEGIN
    IF lower(host) = 'localhost' OR lower(host) LIKE '%.localhost' THEN
        RETURN 'loopback';
    END IF;
    BEGIN
        address := host::inet;
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    -- An IPv4 address written as IPv6 (::ffff:127.0.0.1) is that IPv4 address.
    IF family(address) = 6 AND address << '::ffff:0.0.0.0/96' THEN
        address := '0.0.0.0'::inet + (address - '::ffff:0.0.0.0'::inet);
    END IF;
    RETURN CASE
        WHEN address << '127.0.0.0/8' OR address = '::1' THEN 'loopback'
        WHEN address << '10.0.0.0/8' OR address << '172.16.0.0/12' OR address << '192.168.0.0/16'
             OR address << 'fc00::/7' THEN 'private'
        WHEN address << '169.254.0.0/16' OR address << 'fe80::/10' THEN 'link-local'
        WHEN address << '100.64.0.0/10' THEN 'shared (carrier-grade NAT)'
        WHEN address << '0.0.0.0/8' OR address = '::' THEN 'unspecified'
    END;
END $$;

CREATE OR REPLACE FUNCTION walhook.check_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fresh boolean := TG_OP = 'INSERT';
    bad text;
    host text;
    kind text;
BEGIN
    -- Nothing of the row is echoed that could be a secret; the URL only
    -- once it is known to be of a sensible length. An update is checked
    -- only in the columns it changes: a row written before these bounds
    -- existed keeps working (the relay updates its bookkeeping columns).
    IF fresh OR NEW.url IS DISTINCT FROM OLD.url THEN
        IF NEW.url IS NULL THEN
            RAISE EXCEPTION 'walhook: the subscription URL is missing'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give an absolute URL that starts with https:// or http://, e.g. https://example.com/hooks.';
        END IF;
        IF length(NEW.url) > 2048 THEN
            RAISE EXCEPTION 'walhook: the subscription URL has % characters, more than the limit of 2048', length(NEW.url)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Receivers need no more than a host and a path; move anything else into the body or a header.';
        END IF;
        IF NEW.url !~* '^https?://[^/?#\s]+([/?#]\S*)?$' THEN
            RAISE EXCEPTION 'walhook: subscription URL "%" is not an http(s) URL', NEW.url
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give an absolute URL that starts with https:// or http://, e.g. https://example.com/hooks.';
        END IF;
        host := walhook.url_host(NEW.url);
        IF host IS NULL OR host = '' THEN
            RAISE EXCEPTION 'walhook: subscription URL "%" has no host', NEW.url
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. https://example.com/hooks.';
        END IF;
        IF length(host) > 253 THEN
            RAISE EXCEPTION 'walhook: the subscription URL''s host has % characters, more than the limit of 253', length(host)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A DNS name has at most 253 characters.';
        END IF;
    END IF;
    IF fresh OR NEW.events IS DISTINCT FROM OLD.events THEN
        IF NEW.events IS NULL OR cardinality(NEW.events) = 0 THEN
            RAISE EXCEPTION 'walhook: the subscription''s event list is empty'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List at least one event pattern, e.g. ARRAY[''orders.*''], or ARRAY[''*''] for every event.';
        END IF;
        IF cardinality(NEW.events) > 100 THEN
            RAISE EXCEPTION 'walhook: the subscription lists % event patterns, more than the limit of 100', cardinality(NEW.events)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use wildcards (orders.*, audit.*.*, *.delete) or split the subscription.';
        END IF;
        SELECT length(p)::text INTO bad FROM unnest(NEW.events) AS p WHERE length(p) > 500 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'walhook: an event pattern has % characters, more than the limit of 500', bad
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A pattern is <table>.<action> or <schema>.<table>.<action>; Postgres names have at most 63 bytes.';
        END IF;
        SELECT coalesce(p, 'NULL') INTO bad FROM unnest(NEW.events) AS p
        WHERE p IS NULL OR NOT walhook.valid_event_patterns(ARRAY[p]) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'walhook: event pattern "%" is not valid', bad
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A pattern is <table>.<action> or <schema>.<table>.<action>; the action is insert, update, delete, truncate or read; any part may be *, e.g. orders.*, *.delete, *. Write a name that is not a plain lowercase identifier in double quotes, e.g. "audit.log".insert.';
        END IF;
    END IF;
    IF fresh OR NEW.content_type IS DISTINCT FROM OLD.content_type THEN
        IF NEW.content_type IS NULL OR NEW.content_type NOT IN ('json', 'form') THEN
            RAISE EXCEPTION 'walhook: content type "%" is not known', NEW.content_type
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use ''json'' (the event is the body) or ''form'' (payload=<json>, url-encoded).';
        END IF;
    END IF;
    IF fresh OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        IF NEW.secret IS NULL OR length(NEW.secret) < 8 THEN
            RAISE EXCEPTION 'walhook: the subscription secret is too short (the limit is at least 8 characters)'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave the secret out to have one generated, or give at least 8 characters (whsec_<base64> for Standard Webhooks).';
        END IF;
        IF length(NEW.secret) > 512 THEN
            RAISE EXCEPTION 'walhook: the subscription secret is too long (the limit is 512 characters)'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave the secret out to have one generated (whsec_ and 32 random bytes).';
        END IF;
        IF NEW.secret ~ '^[[:space:]]*$' OR NEW.secret ~ '^[[:space:]]|[[:space:]]$' THEN
            RAISE EXCEPTION 'walhook: the subscription secret is blank or starts or ends with whitespace'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave the secret out to have one generated; a secret given must not be padded with spaces.';
        END IF;
        IF NEW.secret LIKE 'whsec\_%' THEN
            BEGIN
                PERFORM decode(substr(NEW.secret, 7), 'base64');
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'walhook: the subscription secret starts with whsec_ but the rest is not base64'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A whsec_ secret is whsec_ followed by base64 bytes; leave the secret out to have one generated.';
            END;
        END IF;
    END IF;
    IF fresh OR NEW.max_attempts IS DISTINCT FROM OLD.max_attempts THEN
        IF NEW.max_attempts IS NOT NULL AND NEW.max_attempts NOT BETWEEN 1 AND 1000 THEN
            RAISE EXCEPTION 'walhook: max_attempts is %, outside the limits 1 to 1000', NEW.max_attempts
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave max_attempts out to allow one attempt per delay of the retry schedule.';
        END IF;
    END IF;
    IF fresh OR NEW.batch_size IS DISTINCT FROM OLD.batch_size THEN
        IF NEW.batch_size IS NULL OR NEW.batch_size NOT BETWEEN 1 AND 1000 THEN
            RAISE EXCEPTION 'walhook: batch_size is %, outside the limits 1 to 1000', coalesce(NEW.batch_size::text, 'NULL')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'batch_size => 1 (the default) sends one event per request.';
        END IF;
    END IF;
    IF fresh OR NEW.max_in_flight IS DISTINCT FROM OLD.max_in_flight THEN
        IF NEW.max_in_flight IS NOT NULL AND NEW.max_in_flight NOT BETWEEN 1 AND 10000 THEN
            RAISE EXCEPTION 'walhook: max_in_flight is %, outside the limits 1 to 10000', NEW.max_in_flight
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave max_in_flight out for the configured concurrency.';
        END IF;
    END IF;
    IF fresh OR NEW.max_per_second IS DISTINCT FROM OLD.max_per_second THEN
        IF NEW.max_per_second IS NOT NULL
           AND (NEW.max_per_second IN ('NaN', 'Infinity', '-Infinity')
                OR NEW.max_per_second <= 0 OR NEW.max_per_second > 100000) THEN
            RAISE EXCEPTION 'walhook: max_per_second is %, not a finite rate above 0 and at most 100000', NEW.max_per_second
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. max_per_second => 50; leave it out for no limit.';
        END IF;
    END IF;
    IF fresh OR NEW.retry_schedule IS DISTINCT FROM OLD.retry_schedule THEN
        IF NEW.retry_schedule IS NOT NULL AND (cardinality(NEW.retry_schedule) = 0
            OR EXISTS (SELECT 1 FROM unnest(NEW.retry_schedule) d WHERE d IS NULL OR d < interval '0')) THEN
            RAISE EXCEPTION 'walhook: the retry schedule must list at least one delay, none negative'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. ARRAY[''0s'', ''5s'', ''5m'']::interval[]: the first attempt at once, then after 5 seconds, then 5 minutes.';
        END IF;
        IF cardinality(NEW.retry_schedule) > 100 THEN
            RAISE EXCEPTION 'walhook: the retry schedule lists % delays, more than the limit of 100', cardinality(NEW.retry_schedule)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'With max_attempts the last delay repeats: ARRAY[''0s'', ''1m'', ''1h'']::interval[] with max_attempts => 24.';
        END IF;
        -- Months and years have no fixed length: compare the delays as the
        -- relay does, in seconds.
        SELECT d::text INTO bad FROM unnest(NEW.retry_schedule) d
        WHERE extract(epoch FROM d) > 3 * 86400 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'walhook: the retry delay % is longer than the limit of 3 days', bad
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A receiver down for longer is better served by walhook.replay once it is back.';
        END IF;
    END IF;
    IF fresh OR NEW.description IS DISTINCT FROM OLD.description THEN
        IF length(NEW.description) > 1000 THEN
            RAISE EXCEPTION 'walhook: the description has % characters, more than the limit of 1000', length(NEW.description)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NEW.active IS NULL OR NEW.created_at IS NULL THEN
        RAISE EXCEPTION 'walhook: a subscription''s active and created_at cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'walhook.pause and walhook.resume change active.';
    END IF;
    IF fresh OR NEW.url IS DISTINCT FROM OLD.url THEN
        kind := walhook.private_address_kind(walhook.url_host(NEW.url));
        IF kind IS NOT NULL THEN
            RAISE WARNING 'walhook: the subscription URL''s host % is a % address', walhook.url_host(NEW.url), kind
                USING DETAIL = 'walhook refuses private, loopback and link-local targets: its deliveries will be dead at once.',
                      HINT = 'Use a public address, or set delivery.allow_private_targets = true (WALHOOK_ALLOW_PRIVATE_TARGETS) when every subscriber is trusted.';
        END IF;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

------------------------------------------------------------------------
-- Who calls: walhook's own checks need the role behind a SECURITY DEFINER
-- function, which current_user no longer names.
------------------------------------------------------------------------

CREATE FUNCTION walhook.calling_role() RETURNS name
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user
                ELSE current_setting('role')::name END
$$;

------------------------------------------------------------------------
-- Watched tables: system catalogs refused, drops and renames followed
------------------------------------------------------------------------

ALTER TABLE walhook.watched ADD COLUMN type_prefix text;
UPDATE walhook.watched w
SET type_prefix = rtrim(walhook.event_type(n.nspname, c.relname, ''), '.')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = w.relid;

-- Entries whose table no longer exists (dropped where no event trigger
-- followed the drop): removed, each with a warning.
CREATE FUNCTION walhook.forget_missing_tables() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    gone record;
    forgotten integer := 0;
BEGIN
    FOR gone IN DELETE FROM walhook.watched w
                WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.relid)
                RETURNING w.relid::oid AS relid, w.type_prefix LOOP
        RAISE WARNING 'walhook: watched table % (oid %) no longer exists; it is no longer watched',
            coalesce(gone.type_prefix, '?'), gone.relid
            USING HINT = 'Watch it again with walhook.watch once it is re-created.';
        forgotten := forgotten + 1;
    END LOOP;
    RETURN forgotten;
END $$;

-- Records the replication slot capture was set up with (see 0008): the
-- relay may not write walhook.settings itself.
CREATE FUNCTION walhook.record_capture_slot(slot text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO walhook.settings (key, value) VALUES ('capture_slot', slot)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
$$;

CREATE OR REPLACE FUNCTION walhook.set_capture_mode(mode text) RETURNS void
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
    PERFORM walhook.forget_missing_tables();
    FOR rel IN SELECT relid FROM walhook.watched LOOP
        PERFORM walhook.install_capture(rel);
    END LOOP;
END $$;

-- walhook.watch and walhook.unwatch resolve the table's name with the
-- caller's search_path, then do the work as their owner (with a pinned
-- search_path) in watch_table and unwatch_table. `shown` is the table as
-- the caller names it.
CREATE FUNCTION walhook.watch_table(rel regclass, full_image boolean, table_name text, shown text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind "char";
    persistence "char";
    schema_name name;
    note text := '';
    prefix text;
    gap text;
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
        RAISE NOTICE 'walhook.watch: changes to % are not captured yet: %', shown, gap
            USING DETAIL = 'The capture mode is replication, and changes are retained for walhook only from when its replication slot exists. Changes committed before then are never delivered.',
                  HINT = 'Run `walhook migrate` (it creates the slot of the configured capture.slot) before writing changes that must be delivered, or `walhook migrate --mode trigger` for trigger capture.';
    END IF;
    RETURN format('watching %s (%s capture)%s', shown, walhook.capture_mode(), note);
END $$;

CREATE OR REPLACE FUNCTION walhook.watch(table_name text, full_image boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
BEGIN
    RETURN walhook.watch_table(rel, full_image, table_name, rel::text);
END $$;

CREATE FUNCTION walhook.unwatch_table(rel regclass, table_name text, shown text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A table dropped without the event trigger leaves its oid behind.
    IF rel IS NULL AND table_name ~ '^[0-9]{1,10}$' THEN
        DELETE FROM walhook.watched w WHERE w.relid::oid = table_name::oid
            AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.relid);
        IF FOUND THEN
            RETURN format('forgot the dropped table with oid %s', table_name);
        END IF;
    END IF;
    IF rel IS NULL OR NOT EXISTS (SELECT 1 FROM walhook.watched w WHERE w.relid = rel) THEN
        RAISE EXCEPTION 'walhook.unwatch: table "%" is not watched', table_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT relid, type_prefix FROM walhook.watched lists the watched tables.';
    END IF;
    PERFORM walhook.drop_capture_triggers(rel);
    IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
               WHERE p.pubname = 'walhook' AND pr.prrelid = rel) THEN
        EXECUTE format('ALTER PUBLICATION walhook DROP TABLE %s', rel);
    END IF;
    DELETE FROM walhook.watched w WHERE w.relid = rel;
    RETURN format('no longer watching %s', shown);
END $$;

CREATE OR REPLACE FUNCTION walhook.unwatch(table_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := to_regclass(table_name);
BEGIN
    RETURN walhook.unwatch_table(rel, table_name, rel::text);
END $$;

-- sql_drop: a dropped table leaves walhook.watched in the same transaction.
CREATE FUNCTION walhook.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    dropped record;
BEGIN
    IF to_regclass('walhook.watched') IS NULL THEN
        RETURN;
    END IF;
    FOR dropped IN SELECT objid, object_identity FROM pg_event_trigger_dropped_objects()
                   WHERE classid = 'pg_class'::regclass AND object_type = 'table' LOOP
        DELETE FROM walhook.watched w WHERE w.relid::oid = dropped.objid;
        IF FOUND THEN
            RAISE NOTICE 'walhook: the watched table % was dropped; it is no longer watched', dropped.object_identity;
        END IF;
    END LOOP;
END $$;

-- ddl_command_end of ALTER TABLE / ALTER SCHEMA: a renamed watched table
-- keeps being captured, but its events change type, so say so, naming the
-- subscriptions whose patterns named the table (not those of `*` or
-- `*.delete`, which keep matching).
CREATE FUNCTION walhook.notice_renamed_tables() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    renamed record;
    affected text;
BEGIN
    IF to_regclass('walhook.watched') IS NULL THEN
        RETURN;
    END IF;
    FOR renamed IN
        UPDATE walhook.watched w
        SET type_prefix = now_named.prefix
        FROM (SELECT w2.relid, w2.type_prefix AS was,
                     rtrim(walhook.event_type(n.nspname, c.relname, ''), '.') AS prefix
              FROM walhook.watched w2
              JOIN pg_class c ON c.oid = w2.relid
              JOIN pg_namespace n ON n.oid = c.relnamespace) now_named
        WHERE w.relid = now_named.relid AND w.type_prefix IS DISTINCT FROM now_named.prefix
        RETURNING now_named.was, now_named.prefix
    LOOP
        SELECT string_agg(s.id::text, ', ' ORDER BY s.id) INTO affected
        FROM walhook.subscriptions s
        WHERE EXISTS (SELECT 1 FROM unnest(s.events) p
                      WHERE (walhook.pattern_parts(p))[2] IS NOT NULL
                        AND (walhook.event_type_matches(renamed.was || '.insert', p)
                         OR walhook.event_type_matches(renamed.was || '.update', p)
                         OR walhook.event_type_matches(renamed.was || '.delete', p)
                         OR walhook.event_type_matches(renamed.was || '.truncate', p)));
        RAISE NOTICE 'walhook: the watched table % is now %: it is still captured, its events are now %.* instead of %.*',
            renamed.was, renamed.prefix, renamed.prefix, renamed.was
            USING DETAIL = CASE WHEN affected IS NULL THEN 'No subscription named its old events.'
                                ELSE format('Subscriptions that named its old events: %s.', affected) END,
                  HINT = 'Change their patterns to the new name (walhook status lists subscriptions that match no watched table).';
    END LOOP;
END $$;

-- Event triggers need a superuser; without them, start-up, a mode switch
-- and walhook.watch still drop the entries of tables that are gone.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER walhook_forget_dropped_tables ON sql_drop
            EXECUTE FUNCTION walhook.forget_dropped_tables();
        CREATE EVENT TRIGGER walhook_notice_renamed_tables ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
            EXECUTE FUNCTION walhook.notice_renamed_tables();
    ELSE
        RAISE NOTICE 'walhook: not a superuser, so dropped and renamed watched tables are noticed only when walhook run starts'
            USING HINT = 'Run walhook migrate as a superuser once to install the event triggers.';
    END IF;
END $$;

-- Subscriptions with a pattern that names a table but matches no watched
-- table (after a rename, a drop, or a typo). `walhook status` lists them.
CREATE FUNCTION walhook.unmatched_patterns() RETURNS TABLE (subscription_id bigint, pattern text)
LANGUAGE sql STABLE AS $$
    SELECT s.id, p
    FROM walhook.subscriptions s, unnest(s.events) p
    WHERE (walhook.pattern_parts(p))[2] IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM walhook.watched w
          JOIN pg_class c ON c.oid = w.relid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE walhook.event_type_matches(walhook.event_type(n.nspname, c.relname, 'insert'),
                                           regexp_replace(p, '\.[^.]*$', '.*')))
    ORDER BY s.id, p
$$;

------------------------------------------------------------------------
-- Roles
------------------------------------------------------------------------

-- Group roles are cluster-wide: created only when missing, and a parallel
-- migrate of another database that created one first is no error.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['walhook_admin', 'walhook_viewer', 'walhook_relay'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'walhook: cannot create the role % (the role running walhook migrate lacks CREATEROLE)', role_name
                        USING HINT = 'Create it (CREATE ROLE ' || role_name || ' NOLOGIN) and run walhook migrate again.';
            END;
        END IF;
    END LOOP;
END $$;

-- The functions that change subscriptions, watched tables or deliveries,
-- or read secrets, run as their owner with a pinned search_path; the
-- roles reach walhook only through them and through what apply_grants
-- grants.
ALTER FUNCTION walhook.subscribe(text, text[], text, text, integer, interval[], integer, integer, double precision, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.unsubscribe(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.pause(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.resume(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.rotate_secret(bigint, text, interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.redeliver(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.replay(bigint, timestamptz, timestamptz) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.replay_chunk(bigint, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.set_capture_mode(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.record_capture_slot(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.forget_missing_tables() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.ensure_publication() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.forget_dropped_tables() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION walhook.notice_renamed_tables() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Functions that only compute: any role of walhook's may call them.
CREATE FUNCTION walhook.is_pure_function(proc regprocedure) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT proc::oid IN (
        'walhook.quote_event_part(text)'::regprocedure, 'walhook.event_type(text, text, text)'::regprocedure,
        'walhook.event_type_parts(text)'::regprocedure, 'walhook.pattern_parts(text)'::regprocedure,
        'walhook.event_type_matches(text, text)'::regprocedure, 'walhook.event_matches(text, text[])'::regprocedure,
        'walhook.valid_event_patterns(text[])'::regprocedure, 'walhook.capture_mode()'::regprocedure,
        'walhook.limits()'::regprocedure, 'walhook.url_host(text)'::regprocedure,
        'walhook.private_address_kind(text)'::regprocedure, 'walhook.unmatched_patterns()'::regprocedure,
        'walhook.capture_slot()'::regprocedure, 'walhook.capture_gap()'::regprocedure)
$$;

-- (Re)grants the three roles what they may do, on every object of schema
-- walhook, and takes everything from PUBLIC. `walhook migrate` runs it
-- after every migration, so objects that later migrations add are covered:
--   walhook_admin   every function, SELECT on every table (secrets included)
--   walhook_viewer  SELECT on every table and view except the columns of
--                   walhook.subscriptions that hold secrets; pure functions
--   walhook_relay   what `walhook run` needs: see docs/operations.md
CREATE FUNCTION walhook.apply_grants() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    admin boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_admin');
    viewer boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_viewer');
    relay boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_relay');
    fn record;
    tbl record;
    visible text;
BEGIN
    -- Only the owner of walhook's objects can grant on them: a migrate by
    -- another role leaves the grants as they are, and says so.
    IF NOT pg_has_role((SELECT nspowner FROM pg_namespace WHERE nspname = 'walhook'), 'USAGE') THEN
        RAISE WARNING 'walhook: % does not own schema walhook, so the grants to walhook_admin, walhook_viewer and walhook_relay were not refreshed', current_user
            USING HINT = 'Run walhook migrate as the role that owns schema walhook.';
        RETURN;
    END IF;
    REVOKE ALL ON SCHEMA walhook FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA walhook FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA walhook FROM PUBLIC;
    -- hstore's functions belong to the extension: leave them alone.
    FOR fn IN SELECT p.oid::regprocedure AS sig, p.prokind
              FROM pg_proc p
              WHERE p.pronamespace = 'walhook'::regnamespace
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM PUBLIC',
                       CASE fn.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, fn.sig);
        IF admin THEN
            EXECUTE format('GRANT EXECUTE ON %s %s TO walhook_admin',
                           CASE fn.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, fn.sig);
        END IF;
        IF viewer AND walhook.is_pure_function(fn.sig) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO walhook_viewer', fn.sig);
        END IF;
        -- The relay's updates of subscriptions run their check, which calls these.
        IF relay AND walhook.is_pure_function(fn.sig) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO walhook_relay', fn.sig);
        END IF;
    END LOOP;
    IF admin THEN
        GRANT USAGE ON SCHEMA walhook TO walhook_admin;
        GRANT SELECT ON ALL TABLES IN SCHEMA walhook TO walhook_admin;
    END IF;
    IF viewer THEN
        GRANT USAGE ON SCHEMA walhook TO walhook_viewer;
        FOR tbl IN SELECT c.oid::regclass AS rel FROM pg_class c
                   WHERE c.relnamespace = 'walhook'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
                     AND c.oid <> 'walhook.subscriptions'::regclass LOOP
            EXECUTE format('GRANT SELECT ON %s TO walhook_viewer', tbl.rel);
        END LOOP;
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO visible
        FROM pg_attribute a
        WHERE a.attrelid = 'walhook.subscriptions'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('secret', 'previous_secret', 'headers');
        REVOKE ALL ON walhook.subscriptions FROM walhook_viewer;
        EXECUTE format('GRANT SELECT (%s) ON walhook.subscriptions TO walhook_viewer', visible);
    END IF;
    IF relay THEN
        GRANT USAGE ON SCHEMA walhook TO walhook_relay;
        -- The outbox and the relay's work queues (events, deliveries,
        -- attempts, capture, replays, and those later migrations add) are
        -- the relay's to write; the setup and the subscriptions are not.
        FOR tbl IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
                   WHERE c.relnamespace = 'walhook'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm') LOOP
            IF tbl.relkind IN ('v', 'm')
               OR tbl.rel IN ('walhook.schema_migrations'::regclass, 'walhook.settings'::regclass,
                              'walhook.watched'::regclass) THEN
                EXECUTE format('GRANT SELECT ON %s TO walhook_relay', tbl.rel);
            ELSIF tbl.rel = 'walhook.subscriptions'::regclass THEN
                GRANT SELECT, UPDATE ON walhook.subscriptions TO walhook_relay;
            ELSE
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO walhook_relay', tbl.rel);
            END IF;
        END LOOP;
        GRANT EXECUTE ON FUNCTION walhook.capture_mode(), walhook.set_capture_mode(text),
            walhook.record_capture_slot(text),
            walhook.forget_missing_tables(),
            walhook.ensure_publication(), walhook.replay_chunk(bigint, integer),
            walhook.event_matches(text, text[]), walhook.event_type_matches(text, text),
            walhook.unmatched_patterns()
            TO walhook_relay;
    END IF;
END $$;

SELECT walhook.apply_grants();
