-- PostgreSQL translation of migrations/sqlite/0051_destroy_intents.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Destroying a version is a hardware step and a store step. The intent is recorded
-- before the hardware step, so a crash between the two is completed at the next start
-- instead of leaving a retired or compromised version whose key is already gone
-- (docs/lifecycle.md, "Crashes").
CREATE TABLE destroy_intents (
    ring        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    PRIMARY KEY (ring, version)
);
