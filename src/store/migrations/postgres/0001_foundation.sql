-- PostgreSQL translation of migrations/sqlite/0001_foundation.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- keygate foundation schema. Times are seconds since the epoch (BIGINT), so the same
-- queries run on SQLite and PostgreSQL.

CREATE TABLE rings (
    name        TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    backend     TEXT NOT NULL,
    purpose     TEXT NOT NULL CHECK (purpose IN ('jwt', 'mac', 'tls', 'audit')),
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE key_versions (
    ring          TEXT NOT NULL REFERENCES rings(name),
    version       BIGINT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retiring', 'retired', 'compromised', 'destroyed')),
    backend       TEXT NOT NULL,
    algorithm     TEXT NOT NULL,
    locator       TEXT NOT NULL,
    kid           TEXT NOT NULL UNIQUE,
    public_key    BYTEA,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    PRIMARY KEY (ring, version)
);

-- Exactly one active version per ring, enforced by the database itself.
CREATE UNIQUE INDEX key_versions_one_active ON key_versions (ring) WHERE state = 'active';

CREATE TABLE users (
    username       TEXT PRIMARY KEY,
    role           TEXT NOT NULL,
    password_hash  TEXT,
    created_at     BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    owner         TEXT NOT NULL,
    role          TEXT NOT NULL,
    mac           BYTEA NOT NULL UNIQUE,
    mac_ring      TEXT NOT NULL,
    mac_version   BIGINT NOT NULL,
    hint          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE INDEX api_keys_owner ON api_keys (owner);

-- One-off facts about this installation (for example that the bootstrap key was shown).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
