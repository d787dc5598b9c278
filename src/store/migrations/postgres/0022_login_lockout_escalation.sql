-- PostgreSQL translation of migrations/sqlite/0022_login_lockout_escalation.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Login throttling counts failures per account name, per (name, source address) and per
-- source address (keys in src/services/login_throttle.rs). `lockouts` is how many times
-- the key was locked in a row: each new lockout lasts twice the last, up to
-- users.max_lockout. It survives a new counting window and goes when the row is purged.
ALTER TABLE login_failures ADD COLUMN lockouts BIGINT NOT NULL DEFAULT 0;
