-- PostgreSQL translation of migrations/sqlite/0021: the flag is a BOOLEAN here (sqlx binds
-- and decodes a Rust bool as BOOLEAN on PostgreSQL, as INTEGER 0/1 on SQLite).
-- An IdP registration names the audience its tokens must carry, or opts out of the check
-- explicitly (audience_check = 0, logged at start). Registrations made before this
-- migration without an audience keep working as explicit opt-outs, so an upgrade locks
-- no one out; the start-up warning names them.
ALTER TABLE oauth_servers ADD COLUMN audience_check BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE oauth_servers SET audience_check = FALSE WHERE audience IS NULL;
