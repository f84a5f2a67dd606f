-- Subscription options: what each subscriber receives, shaped as it needs,
-- in the order it needs.
--
--   filter        a boolean SQL expression over the row (NEW, OLD, a bare
--                 column), evaluated by Postgres on typed rows
--   body          a SQL expression over the row returning the jsonb body
--   order_key     the columns whose equal values arrive in commit order
--   columns       the columns a payload carries (key columns always)
--   when_changed  updates sent only when one of these columns changed
--   headers       extra request headers, kept like the secret
--
-- Whether and how a change goes to a subscription with options is decided
-- by one statement, generated here (walhook.options_statement) and run by
-- the relay once per batch per subscription and table, over the batch's
-- events as an array; walhook.replay runs the same statement, so a replay
-- sends what routing would have sent. Subscriptions without options never
-- see it.

ALTER TABLE walhook.subscriptions
    ADD COLUMN filter       text,
    ADD COLUMN body         text,
    ADD COLUMN order_key    text[],
    ADD COLUMN columns      text[],
    ADD COLUMN when_changed text[],
    ADD COLUMN headers      jsonb;

-- The request body of one delivery when its subscription shapes what it
-- receives (body, columns); NULL sends the event itself.
ALTER TABLE walhook.deliveries ADD COLUMN body text;

CREATE OR REPLACE FUNCTION walhook.limits() RETURNS TABLE (name text, value text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('url_length', '2048'), ('host_length', '253'), ('patterns', '100'),
           ('pattern_length', '500'), ('secret_min_length', '8'), ('secret_max_length', '512'),
           ('max_attempts', '1000'), ('batch_size', '1000'), ('max_in_flight', '10000'),
           ('max_per_second', '100000'), ('retry_delays', '100'), ('retry_delay', '3 days'),
           ('description_length', '1000'), ('expression_length', '10000'),
           ('option_columns', '100'), ('headers', '50'), ('header_name_length', '256'),
           ('header_value_length', '8192')
$$;

------------------------------------------------------------------------
-- Expressions: one SQL expression, never more
------------------------------------------------------------------------

-- Why `expr` cannot stand as one expression inside walhook's statement,
-- or NULL when it can. Outside string literals, quoted identifiers and
-- comments it must not end the statement (`;`), close a parenthesis it did
-- not open, or name a parameter (`$1`): otherwise text after it would run
-- as SQL of its own. Read with standard_conforming_strings on, as every
-- function that runs such an expression sets it.
CREATE FUNCTION walhook.expression_problem(expr text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    chars text[] := regexp_split_to_array(expr, '');
    n integer := coalesce(array_length(chars, 1), 0);
    i integer := 1;
    c text;
    depth integer := 0;
    nested integer;
    escapes boolean;
    tag text;
    closing integer;
BEGIN
    IF expr IS NULL OR expr ~ '^[[:space:]]*$' THEN
        RETURN 'it is empty';
    END IF;
    WHILE i <= n LOOP
        c := chars[i];
        IF c = '''' THEN
            -- E'...' takes backslash escapes; '...' only doubled quotes.
            escapes := i > 1 AND chars[i - 1] IN ('e', 'E')
                       AND (i = 2 OR chars[i - 2] !~ '[[:alnum:]_$]');
            i := i + 1;
            LOOP
                IF i > n THEN
                    RETURN 'a string literal is not closed';
                END IF;
                IF escapes AND chars[i] = '\' THEN
                    i := i + 2;
                ELSIF chars[i] = '''' AND i < n AND chars[i + 1] = '''' THEN
                    i := i + 2;
                ELSIF chars[i] = '''' THEN
                    EXIT;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
        ELSIF c = '"' THEN
            i := i + 1;
            LOOP
                IF i > n THEN
                    RETURN 'a quoted identifier is not closed';
                END IF;
                IF chars[i] = '"' AND i < n AND chars[i + 1] = '"' THEN
                    i := i + 2;
                ELSIF chars[i] = '"' THEN
                    EXIT;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
        ELSIF c = '-' AND i < n AND chars[i + 1] = '-' THEN
            WHILE i <= n AND chars[i] NOT IN (E'\n', E'\r') LOOP
                i := i + 1;
            END LOOP;
        ELSIF c = '/' AND i < n AND chars[i + 1] = '*' THEN
            -- Comments nest in Postgres.
            nested := 1;
            i := i + 2;
            WHILE nested > 0 LOOP
                IF i > n THEN
                    RETURN 'a /* comment is not closed';
                END IF;
                IF chars[i] = '/' AND i < n AND chars[i + 1] = '*' THEN
                    nested := nested + 1;
                    i := i + 2;
                ELSIF chars[i] = '*' AND i < n AND chars[i + 1] = '/' THEN
                    nested := nested - 1;
                    i := i + 2;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
            i := i - 1;
        ELSIF c = '$' AND (i = 1 OR chars[i - 1] !~ '[[:alnum:]_$]') THEN
            IF i < n AND chars[i + 1] ~ '[0-9]' THEN
                RETURN 'it names a parameter ($' || chars[i + 1] || '); write the value itself';
            END IF;
            tag := substring(array_to_string(chars[i:n], '') FROM '^(\$([[:alpha:]_][[:alnum:]_]*)?\$)');
            IF tag IS NOT NULL THEN
                closing := strpos(array_to_string(chars[i + length(tag):n], ''), tag);
                IF closing = 0 THEN
                    RETURN 'a $-quoted string is not closed';
                END IF;
                i := i + length(tag) + closing + length(tag) - 2;
            END IF;
        ELSIF c = '(' THEN
            depth := depth + 1;
        ELSIF c = ')' THEN
            depth := depth - 1;
            IF depth < 0 THEN
                RETURN 'it closes a parenthesis it did not open';
            END IF;
        ELSIF c = ';' THEN
            RETURN 'it holds a ";": it must be one expression, not statements';
        END IF;
        i := i + 1;
    END LOOP;
    IF depth > 0 THEN
        RETURN 'a parenthesis is not closed';
    END IF;
    RETURN NULL;
END $$;

------------------------------------------------------------------------
-- Rows as Postgres types, payloads with fewer columns
------------------------------------------------------------------------

-- A value of an event's row as jsonb_populate_record reads it back into
-- its column type. Events write bytea as base64 and years BC as ISO 8601
-- astronomical years (-0043 is 44 BC); Postgres reads hex and "BC".
-- `kind` is 'bytea', or 'date' for date, timestamp and timestamptz.
CREATE FUNCTION walhook.json_for_populate(v jsonb, kind text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IS NULL OR jsonb_typeof(v) <> 'string' THEN v
        WHEN kind = 'bytea' AND v #>> '{}' ~ '^[A-Za-z0-9+/]*={0,2}$' AND length(v #>> '{}') % 4 = 0
            THEN to_jsonb('\x' || encode(decode(v #>> '{}', 'base64'), 'hex'))
        WHEN kind = 'date' AND v #>> '{}' ~ '^(-[0-9]+|0000)-'
            THEN to_jsonb(lpad((1 - (substring(v #>> '{}' FROM '^(-?[0-9]+)-'))::bigint)::text, 4, '0')
                          || substring(v #>> '{}' FROM '^-?[0-9]+(-.*)$') || ' BC')
        ELSE v
    END
$$;

-- `obj` (a row or a changes object of an event) with only the keys in
-- `keep`, in that order; anything that is not an object as it is.
CREATE FUNCTION walhook.only_columns(obj jsonb, keep text[]) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(obj) = 'object' THEN
            coalesce((SELECT json_object_agg(k, obj -> k ORDER BY i)
                      FROM unnest(keep) WITH ORDINALITY AS u(k, i)
                      WHERE obj ? k), '{}'::json)
        ELSE obj::json
    END
$$;

-- The event `e` with `record`, `old_record` and `changes` cut to the
-- columns in `keep`; its fields in the order of every event.
CREATE FUNCTION walhook.event_with_columns(e jsonb, keep text[]) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', e -> 'id', 'type', e -> 'type', 'schema', e -> 'schema', 'table', e -> 'table',
        'action', e -> 'action',
        'record', walhook.only_columns(e -> 'record', keep),
        'old_record', walhook.only_columns(e -> 'old_record', keep),
        'changes', walhook.only_columns(e -> 'changes', keep),
        'actor', e -> 'actor', 'txid', e -> 'txid', 'lsn', e -> 'lsn',
        'committed_at', e -> 'committed_at')
$$;

-- The jsonb expression `json_expr` (a row of table `rel` as an event has
-- it) with the values Postgres would misread put in its input form
-- (walhook.json_for_populate), for jsonb_populate_record.
CREATE FUNCTION walhook.populate_source(rel regclass, json_expr text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) = 0 THEN json_expr
                ELSE format('(%s || jsonb_build_object(%s))', json_expr,
                            string_agg(format('%L, walhook.json_for_populate(%s -> %L, %L)',
                                              f.attname, json_expr, f.attname, f.kind), ', ' ORDER BY f.attnum))
           END
    FROM (SELECT a.attname, a.attnum,
                 CASE WHEN coalesce(b.typname, t.typname) = 'bytea' THEN 'bytea' ELSE 'date' END AS kind
          FROM pg_attribute a
          JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
          WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
            AND coalesce(b.typname, t.typname) IN ('bytea', 'date', 'timestamp', 'timestamptz')) f
$$;

------------------------------------------------------------------------
-- The statement of a subscription's options on one table
------------------------------------------------------------------------

-- The statement that decides, for events of table `rel` (`input`: an
-- expression of type jsonb[], by default the parameter $1), which go to a
-- subscription with these options and how. It returns one row per event
-- sent: `n` (its position in the array, from 1), `row_key` (the order key,
-- NULL for the event's own) and `body` (the request body, NULL for the
-- event itself).
--
-- A filter sits in the WHERE of a subquery over the row, so, as in a
-- trigger's WHEN, it must be boolean and may not aggregate or return sets.
-- Its names resolve innermost first: a bare column is walhook_row's (NEW,
-- or OLD for a delete); NEW, OLD and event are relations of the outer
-- level, present only when the expressions name them.
--
-- `check_only` ('filter' or 'body') makes instead a statement that
-- returns that expression's value alone, for walhook.check_options.
CREATE FUNCTION walhook.options_statement(rel regclass, filter text, body text, order_key text[],
                                          columns text[], when_changed text[],
                                          input text DEFAULT '$1::jsonb[]',
                                          check_only text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tbl text;
    exprs text := coalesce(filter, '') || ' ' || coalesce(body, '');
    keys text[];
    keep text[];
    missing text;
    new_json text := 'nullif(r.walhook_e -> ''record'', ''null'')';
    old_json text := 'nullif(r.walhook_e -> ''old_record'', ''null'')';
    from_clause text;
    row_source text;
    conditions text[] := ARRAY[]::text[];
    row_key text := 'NULL::text';
    body_out text := 'NULL::text';
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO tbl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'walhook: the table with oid % no longer exists', rel::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    -- Every column named must be a column of the table.
    SELECT string_agg(format('%s "%s"', o.option, o.name), ', ') INTO missing
    FROM (SELECT 'order_key' AS option, k AS name FROM unnest(order_key) k
          UNION ALL SELECT 'columns', k FROM unnest(columns) k
          UNION ALL SELECT 'when_changed', k FROM unnest(when_changed) k) o
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = o.name);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'walhook: % names no column of %: %', CASE WHEN missing LIKE '%, %' THEN 'the options' ELSE 'an option' END, tbl, missing
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns of %s are: %s.', tbl,
                                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                 FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;

    from_clause := format('unnest(%s) WITH ORDINALITY AS r(walhook_e, walhook_n)', input);
    IF exprs ~* '\mevent\M' THEN
        from_clause := from_clause || E'\nCROSS JOIN LATERAL jsonb_to_record(r.walhook_e) AS event('
            || 'id text, type text, schema text, "table" text, action text, actor text, '
            || 'txid bigint, lsn pg_lsn, committed_at timestamptz)';
    END IF;
    IF exprs ~* '\mnew\M' THEN
        from_clause := from_clause || format(E'\nCROSS JOIN LATERAL jsonb_populate_record(NULL::%s, %s) AS new',
                                             tbl, walhook.populate_source(rel, new_json));
    END IF;
    IF exprs ~* '\mold\M' THEN
        from_clause := from_clause || format(E'\nCROSS JOIN LATERAL jsonb_populate_record(NULL::%s, %s) AS old',
                                             tbl, walhook.populate_source(rel, old_json));
    END IF;
    row_source := format('jsonb_populate_record(NULL::%s, %s) AS walhook_row',
                         tbl, walhook.populate_source(rel, format('coalesce(%s, %s)', new_json, old_json)));

    IF check_only = 'filter' THEN
        RETURN format(E'SELECT f.walhook_value\nFROM %s\nCROSS JOIN LATERAL (SELECT (%s\n) AS walhook_value FROM %s WHERE (%s\n)) AS f',
                      from_clause, filter, row_source, filter);
    ELSIF check_only = 'body' THEN
        -- In a WHERE too, where aggregates, window functions and
        -- set-returning functions are refused.
        RETURN format(E'SELECT f.walhook_value\nFROM %s\nCROSS JOIN LATERAL (SELECT (%s\n) AS walhook_value FROM %s WHERE (%s\n) IS NOT NULL) AS f',
                      from_clause, body, row_source, body);
    END IF;

    IF filter IS NOT NULL THEN
        from_clause := from_clause || format(E'\nCROSS JOIN LATERAL (SELECT FROM %s WHERE (%s\n)) AS walhook_filter',
                                             row_source, filter);
    END IF;
    IF when_changed IS NOT NULL THEN
        -- An update without an old row says nothing about what changed: sent.
        conditions := conditions || format(
            '(r.walhook_e ->> ''action'' IS DISTINCT FROM ''update'' OR jsonb_typeof(r.walhook_e -> ''changes'') IS DISTINCT FROM ''object'' OR (r.walhook_e -> ''changes'') ?| %L::text[])',
            when_changed);
    END IF;
    IF order_key IS NOT NULL THEN
        -- One sequence per value of the key, across the subscription's
        -- tables; a truncate keeps its table's own key.
        row_key := format(
            '(CASE WHEN r.walhook_e ->> ''action'' = ''truncate'' THEN NULL ELSE %L || jsonb_build_array(%s)::text END)',
            'order:' || to_jsonb(order_key)::text || ':',
            (SELECT string_agg(format('coalesce(%s, %s) -> %L', new_json, old_json, k), ', ' ORDER BY i)
             FROM unnest(order_key) WITH ORDINALITY AS u(k, i)));
    END IF;
    IF body IS NOT NULL THEN
        body_out := format(E'coalesce((SELECT ((%s\n))::jsonb FROM %s), ''null''::jsonb)::text', body, row_source);
    ELSIF columns IS NOT NULL THEN
        -- The key columns always, then the table's order.
        SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO keep
        FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
          AND (a.attname = ANY (columns)
               OR EXISTS (SELECT 1 FROM pg_index i
                          WHERE i.indrelid = rel AND i.indisprimary AND a.attnum = ANY (i.indkey)));
        body_out := format('walhook.event_with_columns(r.walhook_e, %L::text[])::text', keep);
    END IF;
    RETURN format(E'SELECT r.walhook_n AS n, %s AS row_key, %s AS body\nFROM %s%s',
                  row_key, body_out, from_clause,
                  CASE WHEN cardinality(conditions) > 0
                       THEN E'\nWHERE ' || array_to_string(conditions, ' AND ') ELSE '' END);
END $$;

-- The statement of subscription `subscription_id` on table `rel`, for the
-- relay (NULL when the subscription has no options or no longer exists).
CREATE FUNCTION walhook.subscription_statement(subscription_id bigint, rel oid) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s record;
BEGIN
    SELECT x.filter, x.body, x.order_key, x.columns, x.when_changed INTO s
    FROM walhook.subscriptions x WHERE x.id = subscription_statement.subscription_id;
    IF NOT FOUND OR (s.filter IS NULL AND s.body IS NULL AND s.order_key IS NULL
                     AND s.columns IS NULL AND s.when_changed IS NULL) THEN
        RETURN NULL;
    END IF;
    -- Changes of a table dropped since they were made cannot be read as
    -- its rows: a subscription with options gets none of them.
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel) THEN
        RETURN 'SELECT r.walhook_n AS n, NULL::text AS row_key, NULL::text AS body
                FROM unnest($1::jsonb[]) WITH ORDINALITY AS r(walhook_e, walhook_n) WHERE false';
    END IF;
    RETURN walhook.options_statement(rel::regclass, s.filter, s.body, s.order_key, s.columns, s.when_changed);
END $$;

------------------------------------------------------------------------
-- Checks at subscribe time
------------------------------------------------------------------------

-- The watched tables a pattern list matches (for any action).
CREATE FUNCTION walhook.tables_matching(patterns text[]) RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT w.relid
    FROM walhook.watched w
    JOIN pg_class c ON c.oid = w.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE EXISTS (SELECT 1 FROM unnest(patterns) p,
                                unnest(ARRAY['insert', 'update', 'delete', 'truncate', 'read']) a
                  WHERE walhook.event_type_matches(walhook.event_type(n.nspname, c.relname, a), p))
    ORDER BY w.relid
$$;

-- Refuses options that do not fit table `rel`, with Postgres's own message
-- and a hint: each expression is compiled by Postgres over the table's row
-- (in a temporary view, dropped again), must be of the right type and may
-- not hold a subquery.
CREATE FUNCTION walhook.check_options(rel regclass, filter text, body text, order_key text[],
                                      columns text[], when_changed text[]) RETURNS void
LANGUAGE plpgsql SET standard_conforming_strings = on AS $$
DECLARE
    option_name text;
    expr text;
    stmt text;
    value_type regtype;
    has_subquery boolean;
    message text;
    state text;
    pg_hint text;
    hint text;
BEGIN
    -- Column names first: an error here names them.
    PERFORM walhook.options_statement(rel, NULL, NULL, order_key, columns, when_changed);
    FOREACH option_name IN ARRAY ARRAY['filter', 'body'] LOOP
        expr := CASE option_name WHEN 'filter' THEN filter ELSE body END;
        CONTINUE WHEN expr IS NULL;
        hint := CASE option_name
            WHEN 'filter' THEN 'A filter is a boolean SQL expression over the row, as in a trigger''s WHEN: NEW.status = ''paid'', OLD.total IS DISTINCT FROM NEW.total; a bare column means NEW (OLD for a delete).'
            ELSE 'A body is a SQL expression over the row returning jsonb: jsonb_build_object(''text'', ''order '' || NEW.id || '' is '' || NEW.status); a bare column means NEW (OLD for a delete).'
        END || format(' The columns of %s are: %s.', rel,
                      (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                       FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
        stmt := walhook.options_statement(rel, filter, body, NULL, NULL, NULL, 'ARRAY[]::jsonb[]', option_name);
        BEGIN
            EXECUTE 'CREATE TEMP VIEW walhook_option_check AS ' || stmt;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE, pg_hint = PG_EXCEPTION_HINT;
            IF pg_hint <> '' THEN
                hint := replace(pg_hint, 'walhook_row.', '') || ' ' || hint;
            END IF;
            RAISE EXCEPTION 'walhook: the % does not fit %: %', option_name, rel, message
                USING ERRCODE = state, HINT = hint;
        END;
        SELECT a.atttypid::regtype INTO value_type FROM pg_attribute a
        WHERE a.attrelid = 'pg_temp.walhook_option_check'::regclass AND a.attname = 'walhook_value';
        SELECT EXISTS (SELECT 1 FROM pg_rewrite r
                       WHERE r.ev_class = 'pg_temp.walhook_option_check'::regclass
                         AND r.ev_action::text LIKE '%{SUBLINK %')
        INTO has_subquery;
        DROP VIEW pg_temp.walhook_option_check;
        IF has_subquery THEN
            RAISE EXCEPTION 'walhook: the % holds a subquery; it may read only the row, as a trigger''s WHEN', option_name
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Compare with a list instead, e.g. NEW.country = ANY (ARRAY[''DE'', ''FR'']), or call a function that looks the value up.';
        END IF;
        IF option_name = 'body' AND value_type NOT IN ('jsonb'::regtype, 'json'::regtype) THEN
            RAISE EXCEPTION 'walhook: the body is of type %, not jsonb', value_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Build it with jsonb_build_object(...), to_jsonb(...) or a ''{...}''::jsonb literal.';
        END IF;
    END LOOP;
END $$;

-- Refuses header lists that could not be sent or would override what
-- walhook sets itself. No message echoes a value: values are often
-- credentials, kept like the secret.
CREATE FUNCTION walhook.check_headers(headers jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h record;
    seen text[] := ARRAY[]::text[];
BEGIN
    IF jsonb_typeof(headers) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'walhook: headers must be a JSON object of header names and string values'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. headers => ''{"Authorization": "Bearer ..."}''';
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(headers)) > 50 THEN
        RAISE EXCEPTION 'walhook: % headers are given, more than the limit of 50', (SELECT count(*) FROM jsonb_object_keys(headers))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR h IN SELECT key, value FROM jsonb_each(headers) LOOP
        IF length(h.key) > 256 OR h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' THEN
            RAISE EXCEPTION 'walhook: "%" is not an HTTP header name', left(h.key, 100)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A header name is letters, digits and !#$%&''*+-.^_`|~ (at most 256), e.g. Authorization or X-Api-Key.';
        END IF;
        IF lower(h.key) = ANY (seen) THEN
            RAISE EXCEPTION 'walhook: the header % is given twice (names are case-insensitive)', h.key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        seen := seen || lower(h.key);
        IF lower(h.key) IN ('content-type', 'content-length', 'content-encoding', 'transfer-encoding',
                            'host', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'expect',
                            'x-hub-signature', 'x-hub-signature-256')
           OR lower(h.key) LIKE 'webhook-%' OR lower(h.key) LIKE 'walhook-%' OR lower(h.key) LIKE 'proxy-%' THEN
            RAISE EXCEPTION 'walhook: the header % cannot be set: walhook sets it itself', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The signature headers (webhook-id, webhook-timestamp, webhook-signature, x-hub-signature-256), walhook-*, content-type and the headers of the HTTP framing are walhook''s.';
        END IF;
        IF jsonb_typeof(h.value) <> 'string' THEN
            RAISE EXCEPTION 'walhook: the value of the header % must be a JSON string', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. headers => ''{"X-Retries": "3"}''';
        END IF;
        IF length(h.value #>> '{}') > 8192 THEN
            RAISE EXCEPTION 'walhook: the value of the header % has % characters, more than the limit of 8192', h.key, length(h.value #>> '{}')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (h.value #>> '{}') ~ '[\x01-\x08\x0a-\x1f\x7f]' THEN
            RAISE EXCEPTION 'walhook: the value of the header % holds a control character (a line break?)', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A header value is one line of text.';
        END IF;
    END LOOP;
END $$;

-- Every write of the options to walhook.subscriptions is checked here,
-- however it is written. The options are checked against every watched
-- table the patterns match; a table watched later that they do not fit
-- disables the subscription when its first change is routed.
CREATE FUNCTION walhook.check_subscription_options() RETURNS trigger
LANGUAGE plpgsql SET standard_conforming_strings = on AS $$
DECLARE
    fresh boolean := TG_OP = 'INSERT';
    option_name text;
    expr text;
    problem text;
    list text[];
    rel regclass;
    checked integer := 0;
    schema_name name;
BEGIN
    IF fresh OR NEW.headers IS DISTINCT FROM OLD.headers THEN
        IF NEW.headers IS NOT NULL THEN
            PERFORM walhook.check_headers(NEW.headers);
        END IF;
    END IF;
    IF NOT fresh AND NEW.filter IS NOT DISTINCT FROM OLD.filter AND NEW.body IS NOT DISTINCT FROM OLD.body
       AND NEW.order_key IS NOT DISTINCT FROM OLD.order_key AND NEW.columns IS NOT DISTINCT FROM OLD.columns
       AND NEW.when_changed IS NOT DISTINCT FROM OLD.when_changed AND NEW.events IS NOT DISTINCT FROM OLD.events
       AND NEW.batch_size IS NOT DISTINCT FROM OLD.batch_size THEN
        RETURN NEW;
    END IF;
    IF NEW.filter IS NULL AND NEW.body IS NULL AND NEW.order_key IS NULL AND NEW.columns IS NULL
       AND NEW.when_changed IS NULL THEN
        RETURN NEW;
    END IF;
    FOREACH option_name IN ARRAY ARRAY['filter', 'body'] LOOP
        expr := CASE option_name WHEN 'filter' THEN NEW.filter ELSE NEW.body END;
        CONTINUE WHEN expr IS NULL;
        IF length(expr) > 10000 THEN
            RAISE EXCEPTION 'walhook: the % has % characters, more than the limit of 10000', option_name, length(expr)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        problem := walhook.expression_problem(expr);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'walhook: the % is not one SQL expression: %', option_name, problem
                USING ERRCODE = 'syntax_error',
                      HINT = CASE option_name WHEN 'filter' THEN 'e.g. filter => ''NEW.status = ''''paid'''' AND NEW.total > 100''.'
                                  ELSE 'e.g. body => ''jsonb_build_object(''''text'''', ''''order '''' || NEW.id)''.' END;
        END IF;
    END LOOP;
    FOREACH option_name IN ARRAY ARRAY['order_key', 'columns', 'when_changed'] LOOP
        list := CASE option_name WHEN 'order_key' THEN NEW.order_key WHEN 'columns' THEN NEW.columns
                                 ELSE NEW.when_changed END;
        CONTINUE WHEN list IS NULL;
        IF cardinality(list) = 0 OR array_position(list, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'walhook: % must list at least one column, and no NULL', option_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. %s => ARRAY[''status'']; leave it out (or clear it with walhook.alter_subscription) for none.', option_name);
        END IF;
        IF cardinality(list) > 100 THEN
            RAISE EXCEPTION 'walhook: % lists % columns, more than the limit of 100', option_name, cardinality(list)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF NEW.body IS NOT NULL AND NEW.columns IS NOT NULL THEN
        RAISE EXCEPTION 'walhook: a subscription with a body takes no columns: the body chooses what is sent'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the columns in the body, e.g. jsonb_build_object(''id'', NEW.id, ''status'', NEW.status).';
    END IF;
    IF NEW.body IS NOT NULL AND NEW.batch_size > 1 THEN
        RAISE EXCEPTION 'walhook: a subscription with a body sends one request per event, so its batch_size must be 1, not %', NEW.batch_size
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave batch_size out, or leave the body out to receive events in batches.';
    END IF;
    FOR rel IN SELECT walhook.tables_matching(NEW.events) LOOP
        PERFORM walhook.check_options(rel, NEW.filter, NEW.body, NEW.order_key, NEW.columns, NEW.when_changed);
        checked := checked + 1;
        SELECT n.nspname INTO schema_name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = rel;
        IF (NEW.filter IS NOT NULL OR NEW.body IS NOT NULL)
           AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_relay')
           AND NOT has_schema_privilege('walhook_relay', schema_name, 'USAGE') THEN
            RAISE WARNING 'walhook: walhook_relay may not use schema %, so the relay cannot read rows of % as their type', schema_name, rel
                USING DETAIL = 'The relay evaluates filters and bodies with its own role; without USAGE on the schema the subscription is disabled at its first change.',
                      HINT = format('GRANT USAGE ON SCHEMA %I TO walhook_relay;', schema_name);
        END IF;
    END LOOP;
    IF checked = 0 THEN
        RAISE NOTICE 'walhook: no watched table matches the subscription''s patterns, so its options were checked against none'
            USING DETAIL = 'They are checked when a change of a matching table is routed: options that do not fit that table disable the subscription, with the reason.',
                  HINT = 'Watch the tables first (walhook.watch), then subscribe, to have the options checked now.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER check_subscription_options
    BEFORE INSERT OR UPDATE ON walhook.subscriptions
    FOR EACH ROW EXECUTE FUNCTION walhook.check_subscription_options();

-- Changing the options changes routing: relays reload.
DROP TRIGGER subscriptions_rerouted ON walhook.subscriptions;
CREATE TRIGGER subscriptions_rerouted
    AFTER UPDATE ON walhook.subscriptions
    FOR EACH ROW
    WHEN (OLD.events IS DISTINCT FROM NEW.events
          OR OLD.active IS DISTINCT FROM NEW.active
          OR OLD.disabled_reason IS DISTINCT FROM NEW.disabled_reason
          OR OLD.filter IS DISTINCT FROM NEW.filter
          OR OLD.body IS DISTINCT FROM NEW.body
          OR OLD.order_key IS DISTINCT FROM NEW.order_key
          OR OLD.columns IS DISTINCT FROM NEW.columns
          OR OLD.when_changed IS DISTINCT FROM NEW.when_changed)
    EXECUTE FUNCTION walhook.notify_subscriptions_changed();

------------------------------------------------------------------------
-- subscribe and alter_subscription
------------------------------------------------------------------------

DROP FUNCTION walhook.subscribe(text, text[], text, text, integer, interval[], integer, integer, double precision, text);

CREATE FUNCTION walhook.subscribe(
    url            text,
    events         text[],
    secret         text DEFAULT NULL,
    content_type   text DEFAULT 'json',
    max_attempts   integer DEFAULT NULL,
    retry_schedule interval[] DEFAULT NULL,
    batch_size     integer DEFAULT 1,
    max_in_flight  integer DEFAULT NULL,
    max_per_second double precision DEFAULT NULL,
    description    text DEFAULT NULL,
    filter         text DEFAULT NULL,
    body           text DEFAULT NULL,
    order_key      text[] DEFAULT NULL,
    columns        text[] DEFAULT NULL,
    when_changed   text[] DEFAULT NULL,
    headers        jsonb DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO walhook.subscriptions
        (url, events, secret, content_type, max_attempts, retry_schedule,
         batch_size, max_in_flight, max_per_second, description,
         filter, body, order_key, columns, when_changed, headers)
    VALUES
        (subscribe.url, subscribe.events, coalesce(subscribe.secret, walhook.generate_secret()),
         coalesce(subscribe.content_type, 'json'), subscribe.max_attempts, subscribe.retry_schedule,
         coalesce(subscribe.batch_size, 1), subscribe.max_in_flight, subscribe.max_per_second,
         subscribe.description, subscribe.filter, subscribe.body, subscribe.order_key,
         subscribe.columns, subscribe.when_changed, subscribe.headers)
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;

-- Changes a subscription's options: each one given is set, each one left
-- out (NULL) stays as it is, and each one named in `clear` goes back to its
-- default (NULL, or 'json' and 1 for content_type and batch_size). The
-- secret changes with walhook.rotate_secret.
CREATE FUNCTION walhook.alter_subscription(
    id             bigint,
    url            text DEFAULT NULL,
    events         text[] DEFAULT NULL,
    content_type   text DEFAULT NULL,
    max_attempts   integer DEFAULT NULL,
    retry_schedule interval[] DEFAULT NULL,
    batch_size     integer DEFAULT NULL,
    max_in_flight  integer DEFAULT NULL,
    max_per_second double precision DEFAULT NULL,
    description    text DEFAULT NULL,
    filter         text DEFAULT NULL,
    body           text DEFAULT NULL,
    order_key      text[] DEFAULT NULL,
    columns        text[] DEFAULT NULL,
    when_changed   text[] DEFAULT NULL,
    headers        jsonb DEFAULT NULL,
    clear          text[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    clearable constant text[] := ARRAY['content_type', 'max_attempts', 'retry_schedule', 'batch_size',
                                       'max_in_flight', 'max_per_second', 'description', 'filter', 'body',
                                       'order_key', 'columns', 'when_changed', 'headers'];
    bad text;
    given text[];
BEGIN
    PERFORM walhook.require_subscription(alter_subscription.id, 'walhook.alter_subscription');
    SELECT string_agg(c, ', ') INTO bad FROM unnest(clear) c WHERE c IS NULL OR c <> ALL (clearable);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'walhook.alter_subscription: cannot clear %', coalesce(bad, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'clear takes option names: ' || array_to_string(clearable, ', ')
                         || '. url and events are always set; walhook.rotate_secret changes the secret.';
    END IF;
    given := array_remove(ARRAY[
        CASE WHEN alter_subscription.content_type IS NOT NULL THEN 'content_type' END,
        CASE WHEN alter_subscription.max_attempts IS NOT NULL THEN 'max_attempts' END,
        CASE WHEN alter_subscription.retry_schedule IS NOT NULL THEN 'retry_schedule' END,
        CASE WHEN alter_subscription.batch_size IS NOT NULL THEN 'batch_size' END,
        CASE WHEN alter_subscription.max_in_flight IS NOT NULL THEN 'max_in_flight' END,
        CASE WHEN alter_subscription.max_per_second IS NOT NULL THEN 'max_per_second' END,
        CASE WHEN alter_subscription.description IS NOT NULL THEN 'description' END,
        CASE WHEN alter_subscription.filter IS NOT NULL THEN 'filter' END,
        CASE WHEN alter_subscription.body IS NOT NULL THEN 'body' END,
        CASE WHEN alter_subscription.order_key IS NOT NULL THEN 'order_key' END,
        CASE WHEN alter_subscription.columns IS NOT NULL THEN 'columns' END,
        CASE WHEN alter_subscription.when_changed IS NOT NULL THEN 'when_changed' END,
        CASE WHEN alter_subscription.headers IS NOT NULL THEN 'headers' END], NULL);
    SELECT string_agg(c, ', ') INTO bad FROM unnest(clear) c WHERE c = ANY (given);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'walhook.alter_subscription: % is both given and cleared', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an option to set it, or name it in clear to take it back to its default.';
    END IF;
    clear := coalesce(clear, ARRAY[]::text[]);
    UPDATE walhook.subscriptions s SET
        url            = coalesce(alter_subscription.url, s.url),
        events         = coalesce(alter_subscription.events, s.events),
        content_type   = CASE WHEN 'content_type' = ANY (clear) THEN 'json'
                              ELSE coalesce(alter_subscription.content_type, s.content_type) END,
        max_attempts   = CASE WHEN 'max_attempts' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.max_attempts, s.max_attempts) END,
        retry_schedule = CASE WHEN 'retry_schedule' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.retry_schedule, s.retry_schedule) END,
        batch_size     = CASE WHEN 'batch_size' = ANY (clear) THEN 1
                              ELSE coalesce(alter_subscription.batch_size, s.batch_size) END,
        max_in_flight  = CASE WHEN 'max_in_flight' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.max_in_flight, s.max_in_flight) END,
        max_per_second = CASE WHEN 'max_per_second' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.max_per_second, s.max_per_second) END,
        description    = CASE WHEN 'description' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.description, s.description) END,
        filter         = CASE WHEN 'filter' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.filter, s.filter) END,
        body           = CASE WHEN 'body' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.body, s.body) END,
        order_key      = CASE WHEN 'order_key' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.order_key, s.order_key) END,
        columns        = CASE WHEN 'columns' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.columns, s.columns) END,
        when_changed   = CASE WHEN 'when_changed' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.when_changed, s.when_changed) END,
        headers        = CASE WHEN 'headers' = ANY (clear) THEN NULL
                              ELSE coalesce(alter_subscription.headers, s.headers) END
    WHERE s.id = alter_subscription.id;
END $$;

------------------------------------------------------------------------
-- Replays send what routing would have sent
------------------------------------------------------------------------

-- As before for subscriptions without options. For one with options, an
-- event it has no delivery for yet is added only when its options send
-- it, shaped and ordered as routing would (the same statement, table by
-- table); options that no longer fit a table disable the subscription with
-- the reason, as routing does. Events that are not row changes
-- (walhook.ping) are added as they are.
--
-- It now runs as its caller, the relay: a filter or body is SQL that
-- walhook_admin wrote, and must run with the relay's privileges, as when
-- it routes, never with those of walhook's owner. walhook.replay (which
-- runs as the owner) therefore queues the first chunk itself only for a
-- subscription without options; a relay queues the others.
CREATE OR REPLACE FUNCTION walhook.replay_chunk(replay_id bigint, chunk integer DEFAULT 5000) RETURNS integer
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    job walhook.replays;
    sub walhook.subscriptions;
    shaped boolean;
    seen integer;
    requeued bigint;
    added bigint;
    last_created timestamptz;
    last_id text;
    grp record;
    rel regclass;
    stmt text;
    message text;
BEGIN
    SELECT * INTO job FROM walhook.replays r WHERE r.id = replay_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR job.done_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT * INTO sub FROM walhook.subscriptions s WHERE s.id = job.subscription_id;
    shaped := sub.filter IS NOT NULL OR sub.body IS NOT NULL OR sub.order_key IS NOT NULL
              OR sub.columns IS NOT NULL OR sub.when_changed IS NOT NULL;
    CREATE TEMP TABLE IF NOT EXISTS walhook_replay_chunk (id text, created_at timestamptz, row_key text, type text)
        ON COMMIT DROP;
    TRUNCATE walhook_replay_chunk;
    INSERT INTO walhook_replay_chunk
    SELECT e.id, e.created_at, e.row_key, e.type FROM walhook.events e
    WHERE e.created_at >= job.since AND e.created_at < job.until
      AND (job.cursor_created_at IS NULL
           OR (e.created_at, e.id) > (job.cursor_created_at, job.cursor_event_id))
    ORDER BY e.created_at, e.id
    LIMIT chunk;
    GET DIAGNOSTICS seen = ROW_COUNT;
    IF seen = 0 THEN
        UPDATE walhook.replays r SET done_at = now() WHERE r.id = replay_id;
        RETURN 0;
    END IF;
    SELECT c.created_at, c.id INTO last_created, last_id FROM walhook_replay_chunk c
    ORDER BY c.created_at DESC, c.id DESC LIMIT 1;
    UPDATE walhook.deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL
    FROM walhook_replay_chunk c
    WHERE d.subscription_id = job.subscription_id AND d.event_id = c.id
      AND d.state IN ('delivered', 'dead');
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF NOT shaped THEN
        INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
        SELECT c.id, job.subscription_id, c.row_key FROM walhook_replay_chunk c
        WHERE walhook.event_matches(c.type, sub.events)
        ORDER BY c.created_at, c.id
        ON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING;
        GET DIAGNOSTICS added = ROW_COUNT;
    ELSE
        CREATE TEMP TABLE IF NOT EXISTS walhook_replay_shaped
            (event_id text, created_at timestamptz, row_key text, body text) ON COMMIT DROP;
        TRUNCATE walhook_replay_shaped;
        FOR grp IN
            SELECT e.payload ->> 'schema' AS schema_name, e.payload ->> 'table' AS table_name,
                   array_agg(e.payload::jsonb ORDER BY c.created_at, c.id) AS payloads,
                   array_agg(c.id ORDER BY c.created_at, c.id) AS ids,
                   array_agg(c.created_at ORDER BY c.created_at, c.id) AS created,
                   array_agg(c.row_key ORDER BY c.created_at, c.id) AS row_keys
            FROM walhook_replay_chunk c
            JOIN walhook.events e ON e.id = c.id
            WHERE walhook.event_matches(c.type, sub.events)
              AND NOT EXISTS (SELECT 1 FROM walhook.deliveries d
                              WHERE d.subscription_id = job.subscription_id AND d.event_id = c.id)
            GROUP BY 1, 2
        LOOP
            IF grp.schema_name IS NULL OR grp.table_name IS NULL THEN
                INSERT INTO walhook_replay_shaped
                SELECT u.id, u.created_at, u.row_key, NULL FROM unnest(grp.ids, grp.created, grp.row_keys) AS u(id, created_at, row_key);
                CONTINUE;
            END IF;
            rel := to_regclass(format('%I.%I', grp.schema_name, grp.table_name));
            IF rel IS NULL THEN
                RAISE NOTICE 'walhook.replay: % no longer exists, so its events are not replayed to subscription % (its options need the table)',
                    format('%I.%I', grp.schema_name, grp.table_name), job.subscription_id;
                CONTINUE;
            END IF;
            BEGIN
                stmt := walhook.options_statement(rel, sub.filter, sub.body, sub.order_key, sub.columns, sub.when_changed);
                EXECUTE format('INSERT INTO walhook_replay_shaped
                                SELECT ($2::text[])[o.n], ($3::timestamptz[])[o.n], coalesce(o.row_key, ($4::text[])[o.n]), o.body
                                FROM (%s) o', stmt)
                USING grp.payloads, grp.ids, grp.created, grp.row_keys;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
                UPDATE walhook.subscriptions s
                SET active = false,
                    disabled_reason = left(format('its options no longer fit %s: %s; fix them with walhook.alter_subscription(%s, ...), then walhook.resume(%s)',
                                                  rel, message, s.id, s.id), 1000)
                WHERE s.id = job.subscription_id;
                RAISE WARNING 'walhook.replay: subscription % disabled: its options no longer fit %: %', job.subscription_id, rel, message;
            END;
        END LOOP;
        INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, body)
        SELECT x.event_id, job.subscription_id, x.row_key, x.body FROM walhook_replay_shaped x
        ORDER BY x.created_at, x.event_id
        ON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING;
        GET DIAGNOSTICS added = ROW_COUNT;
    END IF;
    UPDATE walhook.replays r
    SET cursor_created_at = last_created, cursor_event_id = last_id,
        queued = r.queued + requeued + added,
        done_at = CASE WHEN seen < chunk THEN now() END
    WHERE r.id = replay_id;
    PERFORM pg_notify('walhook_deliveries', '');
    RETURN seen;
END $$;

CREATE OR REPLACE FUNCTION walhook.replay(subscription_id bigint, since timestamptz,
                                          until timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sub walhook.subscriptions;
    job bigint;
    matching bigint;
BEGIN
    PERFORM walhook.require_subscription(replay.subscription_id, 'walhook.replay');
    IF since IS NULL THEN
        RAISE EXCEPTION 'walhook.replay: since must be a time'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. walhook.replay(1, since => now() - interval ''1 hour'').';
    END IF;
    SELECT * INTO sub FROM walhook.subscriptions s WHERE s.id = replay.subscription_id;
    INSERT INTO walhook.replays (subscription_id, since, until)
    VALUES (replay.subscription_id, since, coalesce(until, now()))
    RETURNING id INTO job;
    SELECT count(*) INTO matching FROM walhook.events e
    WHERE e.created_at >= since AND e.created_at < coalesce(until, now())
      AND (walhook.event_matches(e.type, sub.events)
           OR EXISTS (SELECT 1 FROM walhook.deliveries d
                      WHERE d.event_id = e.id AND d.subscription_id = replay.subscription_id));
    IF sub.filter IS NULL AND sub.body IS NULL AND sub.order_key IS NULL
       AND sub.columns IS NULL AND sub.when_changed IS NULL THEN
        PERFORM walhook.replay_chunk(job, 5000);
    END IF;
    PERFORM pg_notify('walhook_replays', job::text);
    RETURN matching;
END $$;

------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------

-- The relay builds and runs the statements; what they call runs as the
-- relay. (walhook_admin gets every function from walhook.apply_grants, and
-- walhook_viewer may not read `headers`: apply_grants leaves that column
-- out.)
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walhook_relay') THEN
        GRANT EXECUTE ON FUNCTION walhook.subscription_statement(bigint, oid),
            walhook.options_statement(regclass, text, text, text[], text[], text[], text, text),
            walhook.json_for_populate(jsonb, text), walhook.populate_source(regclass, text),
            walhook.only_columns(jsonb, text[]),
            walhook.event_with_columns(jsonb, text[])
            TO walhook_relay;
    END IF;
END $$;
