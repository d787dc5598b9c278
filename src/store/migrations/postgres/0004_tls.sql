-- PostgreSQL translation of migrations/sqlite/0004_tls.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- CA profiles added through /api/v1/ca-profiles (profiles from the configuration file are
-- not stored). The CA certificates are kept as PEM text; CRL sources as JSON arrays.
CREATE TABLE ca_profiles (
    name              TEXT PRIMARY KEY,
    ca_pem            TEXT NOT NULL,
    revocation_check  TEXT NOT NULL,
    crl_files         TEXT NOT NULL,
    crl_urls          TEXT NOT NULL,
    crl_refresh_secs  BIGINT NOT NULL,
    stale_crl         TEXT NOT NULL,
    principal_match   TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
