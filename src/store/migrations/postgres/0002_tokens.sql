-- PostgreSQL translation of migrations/sqlite/0002_tokens.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Tokens: sessions with rotating refresh tokens, the access-token denylist, login
-- throttling, and the rotation timestamps of key versions.

-- When a version stopped signing (active -> retiring). It stays published until
-- deactivated_at + the longest token lifetime, then it is retired.
ALTER TABLE key_versions ADD COLUMN deactivated_at BIGINT;

ALTER TABLE users ADD COLUMN updated_at BIGINT;

-- Failed password logins per account name tried, whether or not the account exists, so
-- neither the answer, its timing nor the writes it causes reveal which names exist.
CREATE TABLE login_failures (
    username      TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    window_start  BIGINT NOT NULL,
    locked_until  BIGINT
);
CREATE INDEX login_failures_window ON login_failures (window_start);

-- A login session: opened by the password grant, kept alive by refresh tokens. The
-- per-user cap counts rows with revoked_at IS NULL and expires_at in the future.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    last_used_at    BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT,
    -- Insertion order, where the SQLite queries use rowid (ties in created_at).
    ord             BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX sessions_user_active ON sessions (username, created_at) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token a session was given, as its hardware HMAC. used_at is set when it
-- was exchanged; presenting it again is reuse and revokes the session (RFC 9700 §4.14).
CREATE TABLE refresh_tokens (
    mac          BYTEA PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    mac_ring     TEXT NOT NULL,
    mac_version  BIGINT NOT NULL,
    issued_at    BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Revoked access tokens by jti, kept until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
