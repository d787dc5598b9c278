-- Aggregated audit entries: refused or failed requests are recorded as one entry per
-- (source, actor, reason, minute) with the number of requests it stands for. Existing
-- entries keep count 1 and no source; neither is part of their hash (see
-- src/store/audit.rs, canonical bytes).
ALTER TABLE audit_log ADD COLUMN source TEXT;
ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
