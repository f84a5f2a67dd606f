-- walhook's tables: what is watched, who subscribes, and the outbox
-- (events, deliveries, attempts). Operators query these by name.

CREATE TABLE walhook.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO walhook.settings (key, value) VALUES
    ('capture_mode', 'replication'),
    -- bumped on every change to walhook.subscriptions: a relay compares it
    -- in each outbox transaction and reloads its routing when it moved
    ('subscriptions_version', '0');

CREATE TABLE walhook.watched (
    relid      regclass PRIMARY KEY,
    full_image boolean NOT NULL DEFAULT true,
    watched_at timestamptz NOT NULL DEFAULT now()
);

-- Event patterns: `*`, `<table>.<action>`, `<schema>.<table>.<action>`,
-- where any segment may be `*`.
CREATE FUNCTION walhook.valid_event_patterns(patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT cardinality(patterns) > 0
       AND NOT EXISTS (
           SELECT 1 FROM unnest(patterns) AS p
           WHERE p IS NULL
              OR p !~ '^(\*|[^.[:space:]]+(\.[^.[:space:]]+)?\.(insert|update|delete|truncate|\*))$')
$$;

CREATE TABLE walhook.subscriptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL
        CONSTRAINT subscription_url_must_be_http CHECK (url ~* '^https?://[^/?#\s]+([/?#]\S*)?$'),
    events          text[] NOT NULL
        CONSTRAINT subscription_events_must_be_valid_patterns CHECK (walhook.valid_event_patterns(events)),
    secret          text NOT NULL
        CONSTRAINT subscription_secret_not_empty CHECK (length(secret) >= 8),
    content_type    text NOT NULL DEFAULT 'json'
        CONSTRAINT subscription_content_type_json_or_form CHECK (content_type IN ('json', 'form')),
    active          boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    description     text,
    max_attempts    integer CONSTRAINT subscription_max_attempts_positive CHECK (max_attempts > 0),
    retry_schedule  interval[],
    batch_size      integer NOT NULL DEFAULT 1
        CONSTRAINT subscription_batch_size_positive CHECK (batch_size BETWEEN 1 AND 1000),
    max_in_flight   integer CONSTRAINT subscription_max_in_flight_positive CHECK (max_in_flight > 0),
    max_per_second  double precision CONSTRAINT subscription_max_per_second_positive CHECK (max_per_second > 0),
    previous_secret text,
    previous_secret_expires_at timestamptz,
    failing_since   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE walhook.events (
    id         text PRIMARY KEY,
    type       text NOT NULL,
    payload    json NOT NULL,
    row_key    text NOT NULL,
    txid       bigint,
    commit_lsn pg_lsn,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_created_at ON walhook.events (created_at, id);

CREATE TABLE walhook.deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text NOT NULL REFERENCES walhook.events (id) ON DELETE CASCADE,
    subscription_id bigint NOT NULL REFERENCES walhook.subscriptions (id) ON DELETE CASCADE,
    row_key         text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
        CONSTRAINT delivery_state_known CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_once_per_event_and_subscription UNIQUE (event_id, subscription_id)
);
-- Claiming: per subscription, the due work in order.
CREATE INDEX deliveries_claim ON walhook.deliveries (subscription_id, next_attempt_at, id)
    WHERE state = 'pending';
-- Taking over claims whose lease ran out.
CREATE INDEX deliveries_leased ON walhook.deliveries (lease_until)
    WHERE state = 'in_flight';
-- Per-row order: is an earlier delivery of this row still open?
CREATE INDEX deliveries_open_by_row ON walhook.deliveries (subscription_id, row_key, id)
    WHERE state IN ('pending', 'in_flight');
-- Pruning: finished history by age.
CREATE INDEX deliveries_delivered_at ON walhook.deliveries (delivered_at) WHERE state = 'delivered';
CREATE INDEX deliveries_dead_by_age ON walhook.deliveries (created_at) WHERE state = 'dead';

CREATE TABLE walhook.attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES walhook.deliveries (id) ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    status        integer,
    duration_ms   integer,
    response_body text,
    error         text
);
CREATE INDEX attempts_by_delivery ON walhook.attempts (delivery_id, id);

-- Relays route from an in-memory copy of the subscriptions; the version
-- tells them, inside the transaction that writes a batch, that it is stale.
CREATE FUNCTION walhook.notify_subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE walhook.settings SET value = (value::bigint + 1)::text
    WHERE key = 'subscriptions_version';
    PERFORM pg_notify('walhook_subscriptions', '');
    RETURN NULL;
END $$;
-- Only changes that affect routing move the version: delivery bookkeeping
-- (failing_since, updated_at) updates subscriptions all the time and must
-- not make every relay reload, nor queue up on the settings row.
CREATE TRIGGER subscriptions_added_or_removed
    AFTER INSERT OR DELETE ON walhook.subscriptions
    FOR EACH ROW EXECUTE FUNCTION walhook.notify_subscriptions_changed();
CREATE TRIGGER subscriptions_rerouted
    AFTER UPDATE ON walhook.subscriptions
    FOR EACH ROW
    WHEN (OLD.events IS DISTINCT FROM NEW.events
          OR OLD.active IS DISTINCT FROM NEW.active
          OR OLD.disabled_reason IS DISTINCT FROM NEW.disabled_reason)
    EXECUTE FUNCTION walhook.notify_subscriptions_changed();
CREATE TRIGGER subscriptions_truncated
    AFTER TRUNCATE ON walhook.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION walhook.notify_subscriptions_changed();
