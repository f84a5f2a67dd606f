-- The subscriber-facing SQL interface: subscribe and manage subscriptions,
-- redeliver and replay, and the delivery history view.

-- Does event type `event_type` (`orders.update`, `audit.log.insert`) match
-- one subscription pattern? The action is the last segment; what comes
-- before it names the table. `*` alone matches every event, a `*` table
-- matches every table in every schema, `schema.*` every table of a schema.
CREATE FUNCTION walhook.event_type_matches(event_type text, pattern text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH parts AS (
        SELECT regexp_replace(event_type, '\.[^.]*$', '') AS ev_table,
               substring(event_type from '[^.]*$')       AS ev_action,
               regexp_replace(regexp_replace(pattern, '\.[^.]*$', ''), '^public\.', '') AS pat_table,
               substring(pattern from '[^.]*$')          AS pat_action
    )
    SELECT pattern = '*' OR (
        (pat_action = '*' OR pat_action = ev_action)
        AND (pat_table = '*'
             OR pat_table = ev_table
             OR (pat_table LIKE '%.*'
                 AND CASE WHEN left(pat_table, -2) = 'public' THEN ev_table NOT LIKE '%.%'
                          ELSE ev_table LIKE left(pat_table, -2) || '.%' END)))
    FROM parts
$$;

CREATE FUNCTION walhook.event_matches(event_type text, patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(patterns) p WHERE walhook.event_type_matches(event_type, p))
$$;

-- Every write to walhook.subscriptions, through walhook.subscribe or a
-- plain INSERT/UPDATE, is checked here so that a bad row is refused with a
-- message that says what is wrong and how to put it right.
CREATE FUNCTION walhook.check_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    IF NEW.url IS NULL OR NEW.url !~* '^https?://[^/?#\s]+([/?#]\S*)?$' THEN
        RAISE EXCEPTION 'walhook: subscription URL "%" is not an http(s) URL', NEW.url
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an absolute URL that starts with https:// or http://, e.g. https://example.com/hooks.';
    END IF;
    IF NEW.events IS NULL OR cardinality(NEW.events) = 0 THEN
        RAISE EXCEPTION 'walhook: the subscription''s event list is empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List at least one event pattern, e.g. ARRAY[''orders.*''], or ARRAY[''*''] for every event.';
    END IF;
    SELECT p INTO bad FROM unnest(NEW.events) AS p
    WHERE NOT walhook.valid_event_patterns(ARRAY[p]) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'walhook: event pattern "%" is not valid', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A pattern is <table>.<action> or <schema>.<table>.<action>; the action is insert, update, delete or truncate; any segment may be *, e.g. orders.*, *.delete, *.';
    END IF;
    IF NEW.content_type IS NULL OR NEW.content_type NOT IN ('json', 'form') THEN
        RAISE EXCEPTION 'walhook: content type "%" is not known', NEW.content_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''json'' (the event is the body) or ''form'' (payload=<json>, url-encoded).';
    END IF;
    IF NEW.secret IS NULL OR length(NEW.secret) < 8 THEN
        RAISE EXCEPTION 'walhook: the subscription secret is too short'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave the secret out to have one generated, or give at least 8 characters (whsec_<base64> for Standard Webhooks).';
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
    IF NEW.retry_schedule IS NOT NULL AND (cardinality(NEW.retry_schedule) = 0
        OR EXISTS (SELECT 1 FROM unnest(NEW.retry_schedule) d WHERE d IS NULL OR d < interval '0')) THEN
        RAISE EXCEPTION 'walhook: the retry schedule must list at least one delay, none negative'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ARRAY[''0s'', ''5s'', ''5m'']::interval[]: the first attempt at once, then after 5 seconds, then 5 minutes.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER check_subscription
    BEFORE INSERT OR UPDATE ON walhook.subscriptions
    FOR EACH ROW EXECUTE FUNCTION walhook.check_subscription();

-- A new Standard Webhooks secret: whsec_ and 32 random bytes in base64.
CREATE FUNCTION walhook.generate_secret() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'), 'base64')
$$;

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
    description    text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO walhook.subscriptions
        (url, events, secret, content_type, max_attempts, retry_schedule,
         batch_size, max_in_flight, max_per_second, description)
    VALUES
        (subscribe.url, subscribe.events, coalesce(subscribe.secret, walhook.generate_secret()),
         coalesce(subscribe.content_type, 'json'), subscribe.max_attempts, subscribe.retry_schedule,
         coalesce(subscribe.batch_size, 1), subscribe.max_in_flight, subscribe.max_per_second,
         subscribe.description)
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;

CREATE FUNCTION walhook.require_subscription(sub_id bigint, caller text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM walhook.subscriptions s WHERE s.id = sub_id) THEN
        RAISE EXCEPTION '%: there is no subscription with id %', caller, sub_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT id, url, events FROM walhook.subscriptions lists them.';
    END IF;
END $$;

-- Removes the subscription with its deliveries and their history.
-- walhook.pause keeps them.
CREATE FUNCTION walhook.unsubscribe(id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM walhook.require_subscription(unsubscribe.id, 'walhook.unsubscribe');
    DELETE FROM walhook.subscriptions s WHERE s.id = unsubscribe.id;
END $$;

CREATE FUNCTION walhook.pause(id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM walhook.require_subscription(pause.id, 'walhook.pause');
    UPDATE walhook.subscriptions s SET active = false, disabled_reason = 'paused'
    WHERE s.id = pause.id;
END $$;

CREATE FUNCTION walhook.resume(id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM walhook.require_subscription(resume.id, 'walhook.resume');
    UPDATE walhook.subscriptions s SET active = true, disabled_reason = NULL, failing_since = NULL
    WHERE s.id = resume.id;
    PERFORM pg_notify('walhook_deliveries', '');
END $$;

-- Replaces the secret; requests keep carrying a signature made with the
-- old one too until `keep_old` has passed, so receivers can switch over.
-- Returns the new secret.
CREATE FUNCTION walhook.rotate_secret(id bigint, new_secret text DEFAULT NULL,
                                      keep_old interval DEFAULT interval '24 hours') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    fresh text := coalesce(new_secret, walhook.generate_secret());
BEGIN
    PERFORM walhook.require_subscription(rotate_secret.id, 'walhook.rotate_secret');
    IF keep_old IS NULL OR keep_old < interval '0' THEN
        RAISE EXCEPTION 'walhook.rotate_secret: keep_old must be an interval of zero or more'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. keep_old => interval ''24 hours''; interval ''0'' drops the old secret at once.';
    END IF;
    UPDATE walhook.subscriptions s
    SET previous_secret = CASE WHEN keep_old > interval '0' THEN s.secret END,
        previous_secret_expires_at = CASE WHEN keep_old > interval '0' THEN now() + keep_old END,
        secret = fresh
    WHERE s.id = rotate_secret.id;
    RETURN fresh;
END $$;

-- Queues the delivery again: same event, same webhook-id, a fresh attempt
-- count; earlier attempts stay in walhook.attempts.
CREATE FUNCTION walhook.redeliver(delivery_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_state text;
BEGIN
    SELECT d.state INTO current_state FROM walhook.deliveries d WHERE d.id = delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'walhook.redeliver: there is no delivery with id %', delivery_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT * FROM walhook.recent_deliveries lists recent deliveries.';
    END IF;
    IF current_state IN ('delivered', 'dead') THEN
        UPDATE walhook.deliveries d
        SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL
        WHERE d.id = delivery_id;
    ELSIF current_state = 'pending' THEN
        UPDATE walhook.deliveries d SET next_attempt_at = now() WHERE d.id = delivery_id;
    END IF;
    PERFORM pg_notify('walhook_deliveries', '');
END $$;

-- A replay in progress: events of [since, until) are queued for the
-- subscription in chunks, each its own transaction, so a large range never
-- holds many rows locked at once nor delays delivery until it is all done.
CREATE TABLE walhook.replays (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id   bigint NOT NULL REFERENCES walhook.subscriptions (id) ON DELETE CASCADE,
    since             timestamptz NOT NULL,
    until             timestamptz NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    cursor_created_at timestamptz,
    cursor_event_id   text,
    queued            bigint NOT NULL DEFAULT 0,
    done_at           timestamptz
);

-- Queues the next `chunk` events of replay `replay_id`; returns how many
-- events it went through (0 once the replay is done).
CREATE FUNCTION walhook.replay_chunk(replay_id bigint, chunk integer DEFAULT 5000) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    job walhook.replays;
    patterns text[];
    seen integer;
    requeued bigint;
    added bigint;
    last_created timestamptz;
    last_id text;
BEGIN
    SELECT * INTO job FROM walhook.replays r WHERE r.id = replay_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR job.done_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT s.events INTO patterns FROM walhook.subscriptions s WHERE s.id = job.subscription_id;
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
    INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
    SELECT c.id, job.subscription_id, c.row_key FROM walhook_replay_chunk c
    WHERE walhook.event_matches(c.type, patterns)
    ORDER BY c.created_at, c.id
    ON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    UPDATE walhook.replays r
    SET cursor_created_at = last_created, cursor_event_id = last_id,
        queued = r.queued + requeued + added,
        done_at = CASE WHEN seen < chunk THEN now() END
    WHERE r.id = replay_id;
    PERFORM pg_notify('walhook_deliveries', '');
    RETURN seen;
END $$;

-- Queues again every event in [since, until) that the subscription's
-- patterns match, also events from before it existed, with the same event
-- ids. The first chunk is queued at once; a running relay queues the rest
-- in the background (progress in walhook.replays). Returns the number of
-- matching events.
CREATE FUNCTION walhook.replay(subscription_id bigint, since timestamptz,
                               until timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    patterns text[];
    job bigint;
    matching bigint;
BEGIN
    PERFORM walhook.require_subscription(replay.subscription_id, 'walhook.replay');
    IF since IS NULL THEN
        RAISE EXCEPTION 'walhook.replay: since must be a time'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. walhook.replay(1, since => now() - interval ''1 hour'').';
    END IF;
    SELECT s.events INTO patterns FROM walhook.subscriptions s WHERE s.id = replay.subscription_id;
    INSERT INTO walhook.replays (subscription_id, since, until)
    VALUES (replay.subscription_id, since, coalesce(until, now()))
    RETURNING id INTO job;
    SELECT count(*) INTO matching FROM walhook.events e
    WHERE e.created_at >= since AND e.created_at < coalesce(until, now())
      AND (walhook.event_matches(e.type, patterns)
           OR EXISTS (SELECT 1 FROM walhook.deliveries d
                      WHERE d.event_id = e.id AND d.subscription_id = replay.subscription_id));
    PERFORM walhook.replay_chunk(job, 5000);
    PERFORM pg_notify('walhook_replays', job::text);
    RETURN matching;
END $$;

-- The delivery history, newest first: one row a delivery, with its event,
-- subscription and last attempt.
CREATE VIEW walhook.recent_deliveries AS
SELECT d.id            AS delivery_id,
       d.event_id,
       e.type          AS event_type,
       d.subscription_id,
       s.url,
       d.state,
       d.attempts,
       a.status        AS last_status,
       a.error         AS last_error,
       a.attempted_at  AS last_attempt_at,
       d.next_attempt_at,
       d.delivered_at,
       d.created_at
FROM (SELECT * FROM walhook.deliveries ORDER BY id DESC LIMIT 1000) d
JOIN walhook.events e ON e.id = d.event_id
JOIN walhook.subscriptions s ON s.id = d.subscription_id
LEFT JOIN LATERAL (
    SELECT at.status, at.error, at.attempted_at FROM walhook.attempts at
    WHERE at.delivery_id = d.id ORDER BY at.id DESC LIMIT 1
) a ON true
ORDER BY d.id DESC;
