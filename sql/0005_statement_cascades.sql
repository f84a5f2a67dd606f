-- Foreign keys checked row by row cost every delivery two lookups that
-- lock the referenced rows, and every attempt one more: about a third of
-- the outbox writer's time. They become statement-level triggers that
-- delete what referred to deleted rows (one statement per delete, not one
-- per row). The writers keep the references valid themselves: the outbox
-- inserts an event's deliveries in the event's own transaction and locks
-- the subscriptions it routes to, and an attempt is recorded only for a
-- delivery that still exists.
ALTER TABLE walhook.attempts DROP CONSTRAINT attempts_delivery_id_fkey;
ALTER TABLE walhook.deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE walhook.deliveries DROP CONSTRAINT deliveries_subscription_id_fkey;

CREATE FUNCTION walhook.delete_deliveries_of_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM walhook.deliveries d USING deleted_events g WHERE d.event_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_delete_deliveries AFTER DELETE ON walhook.events
    REFERENCING OLD TABLE AS deleted_events
    FOR EACH STATEMENT EXECUTE FUNCTION walhook.delete_deliveries_of_events();

CREATE FUNCTION walhook.delete_deliveries_of_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM walhook.deliveries d USING deleted_subscriptions g WHERE d.subscription_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER subscriptions_delete_deliveries AFTER DELETE ON walhook.subscriptions
    REFERENCING OLD TABLE AS deleted_subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION walhook.delete_deliveries_of_subscriptions();

CREATE FUNCTION walhook.delete_attempts_of_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM walhook.attempts a USING deleted_deliveries g WHERE a.delivery_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_delete_attempts AFTER DELETE ON walhook.deliveries
    REFERENCING OLD TABLE AS deleted_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION walhook.delete_attempts_of_deliveries();
