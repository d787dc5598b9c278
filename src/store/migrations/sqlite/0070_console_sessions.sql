-- Console sessions (docs/console.md): a login session whose credential is the browser
-- cookie `__Host-keygate_console`. The session itself is a row of `sessions` (so it counts
-- toward sessions.max_per_user and is listed and revoked like any other); this table holds
-- the SHA-256 of the cookie's random value, never the value itself.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'token';
CREATE TABLE console_sessions (
    session_id       TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    cookie_hash      BLOB NOT NULL UNIQUE,
    -- Break-glass sign-in with an API key: the key's binding (id.generation). The session
    -- ends when the key is deleted or regenerated. NULL for a password sign-in.
    api_key_binding  TEXT
);
