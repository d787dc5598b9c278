-- An IdP registration names the audience its tokens must carry, or opts out of the check
-- explicitly (audience_check = 0, logged at start). Registrations made before this
-- migration without an audience keep working as explicit opt-outs, so an upgrade locks
-- no one out; the start-up warning names them.
ALTER TABLE oauth_servers ADD COLUMN audience_check INTEGER NOT NULL DEFAULT 1;
UPDATE oauth_servers SET audience_check = 0 WHERE audience IS NULL;
