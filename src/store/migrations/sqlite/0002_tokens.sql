-- Tokens: sessions with rotating refresh tokens, the access-token denylist, login
-- throttling, and the rotation timestamps of key versions.

-- When a version stopped signing (active -> retiring). It stays published until
-- deactivated_at + the longest token lifetime, then it is retired.
ALTER TABLE key_versions ADD COLUMN deactivated_at INTEGER;

ALTER TABLE users ADD COLUMN updated_at INTEGER;

-- Failed password logins per account name tried, whether or not the account exists, so
-- neither the answer, its timing nor the writes it causes reveal which names exist.
CREATE TABLE login_failures (
    username      TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    locked_until  INTEGER
);
CREATE INDEX login_failures_window ON login_failures (window_start);

-- A login session: opened by the password grant, kept alive by refresh tokens. The
-- per-user cap counts rows with revoked_at IS NULL and expires_at in the future.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user_active ON sessions (username, created_at) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token a session was given, as its hardware HMAC. used_at is set when it
-- was exchanged; presenting it again is reuse and revokes the session (RFC 9700 §4.14).
CREATE TABLE refresh_tokens (
    mac          BLOB PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    mac_ring     TEXT NOT NULL,
    mac_version  INTEGER NOT NULL,
    issued_at    INTEGER NOT NULL,
    used_at      INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Revoked access tokens by jti, kept until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
