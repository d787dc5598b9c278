-- PostgreSQL translation of migrations/sqlite/0020_audit_aggregates.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Aggregated audit entries: refused or failed requests are recorded as one entry per
-- (source, actor, reason, minute) with the number of requests it stands for. Existing
-- entries keep count 1 and no source; neither is part of their hash (see
-- src/store/audit.rs, canonical bytes).
ALTER TABLE audit_log ADD COLUMN source TEXT;
ALTER TABLE audit_log ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
