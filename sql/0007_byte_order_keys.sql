-- Event ids and row keys are identifiers, compared for equality and kept
-- in byte order: the "C" collation compares them with memcmp. Under the
-- database's collation every index insert and lookup on them went through
-- strcoll, which for a locale such as en_US.UTF-8 costs several times more.
-- The delivery history view reads these columns, so it is made again as it
-- was.
DROP VIEW walhook.recent_deliveries;

ALTER TABLE walhook.events
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN row_key TYPE text COLLATE "C";
ALTER TABLE walhook.deliveries
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN row_key TYPE text COLLATE "C";

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
FROM (SELECT id, event_id, subscription_id, state, attempts, next_attempt_at, delivered_at, created_at
      FROM walhook.deliveries ORDER BY id DESC LIMIT 1000) d
JOIN walhook.events e ON e.id = d.event_id
JOIN walhook.subscriptions s ON s.id = d.subscription_id
LEFT JOIN LATERAL (
    SELECT at.status, at.error, at.attempted_at FROM walhook.attempts at
    WHERE at.delivery_id = d.id ORDER BY at.id DESC LIMIT 1
) a ON true
ORDER BY d.id DESC;
