-- Identities beyond users and API keys: custom roles, groups and their grants on
-- resources, API key files (public keys only) with their seen assertion ids, and
-- external OAuth 2.0 / OIDC servers.

CREATE TABLE roles (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    permissions  TEXT NOT NULL,            -- JSON array of permission names
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE groups (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Members are principals as docs/roles.md defines them: a user name, an API key owner, a key
-- file's accessID, or `<oauth_id>:<sub>`.
CREATE TABLE group_members (
    group_name  TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    principal   TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (group_name, principal)
);
CREATE INDEX group_members_by_principal ON group_members (principal);

CREATE TABLE group_grants (
    group_name   TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    resource     TEXT NOT NULL,            -- "ring:<name>"
    permissions  TEXT NOT NULL,            -- JSON array: view, sign, rotate, admin
    granted_by   TEXT NOT NULL,
    granted_at   INTEGER NOT NULL,
    PRIMARY KEY (group_name, resource)
);

CREATE TABLE key_files (
    access_id      TEXT PRIMARY KEY,
    customer_name  TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    role           TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    public_key     BLOB NOT NULL,          -- SubjectPublicKeyInfo DER; never a private key
    key_source     TEXT NOT NULL CHECK (key_source IN ('generated', 'client')),
    generation     INTEGER NOT NULL,       -- bumped by regenerate; binds minted tokens
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);

-- Assertion ids seen per key file, kept until the assertion expires: replay detection.
CREATE TABLE assertion_jtis (
    access_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (access_id, jti)
);
CREATE INDEX assertion_jtis_by_expiry ON assertion_jtis (expires_at);

CREATE TABLE oauth_servers (
    oauth_id        TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    issuer          TEXT NOT NULL UNIQUE,
    public_key_pem  TEXT,
    jwks_uri        TEXT,
    audience        TEXT,
    role_claim      TEXT NOT NULL,
    role_mapping    TEXT NOT NULL,          -- JSON object: IdP value -> local role
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((public_key_pem IS NULL) <> (jwks_uri IS NULL))
);
