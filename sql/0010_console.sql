-- The console's needs: a test event a subscriber can ask for
-- (walhook.ping), and indexes that let its pages read one subscription's
-- history newest first, page by page, without scanning the outbox.

-- One subscription's deliveries newest first (keyset paging on id). Both
-- columns are set once at insert, so claims stay in-place updates.
CREATE INDEX deliveries_by_subscription ON walhook.deliveries (subscription_id, id);
-- One subscription's dead deliveries: the "dead" filter, "redeliver all
-- dead ones" and the failing subscriptions of the overview.
CREATE INDEX deliveries_dead_by_subscription ON walhook.deliveries (subscription_id, id)
    WHERE phase = 'dead';

-- A ULID (Crockford base32 of 48 bits of milliseconds and 80 random
-- bits) as an event id, the form events captured from rows have.
CREATE FUNCTION walhook.new_event_id() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    millis bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    bits bit(130) := B'00' || millis::bit(48)
        || ('x' || encode(substring(uuid_send(gen_random_uuid()) FROM 1 FOR 10), 'hex'))::bit(80);
    id text := '';
BEGIN
    FOR i IN 0..25 LOOP
        id := id || substr(alphabet, substring(bits FROM i * 5 + 1 FOR 5)::integer + 1, 1);
    END LOOP;
    RETURN 'evt_' || id;
END $$;

-- Sends the subscription one event of type walhook.ping through the
-- ordinary outbox: signed, recorded and retried like any other, so it
-- shows whether the endpoint receives and verifies walhook's requests. A
-- paused or disabled subscription gets it once resumed. Returns the
-- event id (the webhook-id the receiver sees).
CREATE FUNCTION walhook.ping(subscription_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sub walhook.subscriptions;
    event_id text := walhook.new_event_id();
    body json;
BEGIN
    PERFORM walhook.require_subscription(ping.subscription_id, 'walhook.ping');
    SELECT * INTO sub FROM walhook.subscriptions s WHERE s.id = ping.subscription_id;
    body := json_build_object(
        'id', event_id,
        'type', 'walhook.ping',
        'subscription_id', sub.id,
        'url', sub.url,
        'events', sub.events,
        'committed_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    INSERT INTO walhook.events (id, type, payload, row_key, txid)
    VALUES (event_id, 'walhook.ping', body, 'walhook.ping:' || event_id, txid_current());
    INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
    VALUES (event_id, sub.id, 'walhook.ping:' || event_id);
    PERFORM pg_notify('walhook_deliveries', '');
    RETURN event_id;
END $$;

-- walhook_admin may ping, but may not write the outbox itself: the ping
-- runs as walhook's owner.
ALTER FUNCTION walhook.ping(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
