-- PostgreSQL translation of migrations/sqlite/0010_trust_core.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- The trust core (docs/architecture.md, docs/lifecycle.md).
--
-- Who created each API key: a key created by its own owner proves that person (it may
-- vote on approvals); one created for them by someone else does not. NULL for keys made
-- before this column existed: they count as made by someone else.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;

-- The credential each vote was cast with, `<kind>:<id>` (session:<sid>, api-key:<id>,
-- idp:<oauth_id>, key-file:<accessID>); signed with the vote.
ALTER TABLE approval_votes ADD COLUMN credential TEXT NOT NULL DEFAULT '';

-- The credential the requester used, `<kind>:<id>` as above: execution re-checks the
-- requester's right through it (a deleted or demoted requester fails the request).
ALTER TABLE approvals ADD COLUMN requested_with TEXT NOT NULL DEFAULT '';

-- create-super-admin-key approvals are redeemed once by their requester, who then gets
-- the new key's secret; when that happened (NULL: not yet).
ALTER TABLE approvals ADD COLUMN redeemed_at BIGINT;
