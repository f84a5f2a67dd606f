-- Event payloads and response bodies over about 2 kB are compressed in
-- place. lz4 compresses several times faster than Postgres's default
-- pglz, which showed up as the outbox writer's largest single cost.
-- Servers built without lz4 keep pglz.
DO $$
BEGIN
    ALTER TABLE walhook.events ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE walhook.attempts ALTER COLUMN response_body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'walhook: this server cannot compress with lz4 (%); payloads stay compressed with pglz', SQLERRM;
END
$$;
