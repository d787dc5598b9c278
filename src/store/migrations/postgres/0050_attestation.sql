-- PostgreSQL translation of migrations/sqlite/0050_attestation.sql (BIGINT for INTEGER, BYTEA for BLOB).
-- Key attestation: the attestation key (AK) each TPM backend certifies keys with, as
-- first seen. The AK is derived from the TPM's endorsement seed, so it never changes for
-- one TPM; a different AK later means another TPM or a cleared endorsement hierarchy,
-- and attestation refuses until an operator looks (docs/attestation.md).
CREATE TABLE attestation_keys (
    backend      TEXT PRIMARY KEY,
    ak_name      TEXT NOT NULL,          -- hex TPM name of the AK
    ak_public    BYTEA NOT NULL,          -- TPM2B_PUBLIC
    recorded_at  BIGINT NOT NULL
);
