-- PostgreSQL translation of migrations/sqlite/0030_credential_ids.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Public identifiers of API keys and refresh tokens (docs/api-keys.md "Format").
-- A credential in the current format `<prefix><id>_<secret><check>` is found by its id;
-- records from before have none (NULL) and keep working until they expire or are
-- regenerated or rotated.
ALTER TABLE api_keys ADD COLUMN public_id TEXT;
CREATE UNIQUE INDEX api_keys_public_id ON api_keys (public_id) WHERE public_id IS NOT NULL;

ALTER TABLE refresh_tokens ADD COLUMN public_id TEXT;
CREATE UNIQUE INDEX refresh_tokens_public_id ON refresh_tokens (public_id)
    WHERE public_id IS NOT NULL;
