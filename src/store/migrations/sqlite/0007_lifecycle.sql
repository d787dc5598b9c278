-- Key lifecycle: M-of-N approvals, the hash-chained audit log with signed checkpoints,
-- store leases for work one replica does at a time, and when versions were compromised
-- or destroyed.

ALTER TABLE key_versions ADD COLUMN compromised_at INTEGER;
ALTER TABLE key_versions ADD COLUMN destroyed_at INTEGER;

-- One approval request. `request_sig` is the audit ring's signature (made in hardware)
-- over the canonical bytes of the request fields; `state` moves pending -> executing ->
-- executed | failed in compare-and-set updates, or pending -> rejected | expired.
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    operation     TEXT NOT NULL,
    target        TEXT NOT NULL,
    params        TEXT NOT NULL,          -- canonical JSON of the operation's parameters
    requested_by  TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    required      INTEGER NOT NULL,
    approvers     TEXT NOT NULL,          -- eligibility rule at request time
    state         TEXT NOT NULL CHECK (state IN ('pending', 'executing', 'executed', 'rejected', 'expired', 'failed')),
    outcome       TEXT,
    decided_at    INTEGER,
    sig_kid       TEXT NOT NULL,
    request_sig   BLOB NOT NULL
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';

-- One decision per principal per request; `signature` is the audit ring's signature
-- over the vote's canonical bytes, which include the request's digest.
CREATE TABLE approval_votes (
    approval_id  TEXT NOT NULL REFERENCES approvals(id),
    principal    TEXT NOT NULL,
    decision     TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    at           INTEGER NOT NULL,
    sig_kid      TEXT NOT NULL,
    signature    BLOB NOT NULL,
    PRIMARY KEY (approval_id, principal)
);

-- The audit log: `hash` = SHA-256 of the entry's canonical bytes, which include
-- `prev_hash`, the previous entry's hash (32 zero bytes before the first entry).
CREATE TABLE audit_log (
    seq                 INTEGER PRIMARY KEY,
    time                INTEGER NOT NULL,
    actor               TEXT NOT NULL,
    auth_method         TEXT NOT NULL,
    client_cert_serial  TEXT,
    action              TEXT NOT NULL,
    target              TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    request_id          TEXT,
    prev_hash           BLOB NOT NULL,
    hash                BLOB NOT NULL
);

-- The chain head, one row. Appending updates it first, so the append holds the write
-- lock from its first statement and seq/prev_hash can never fork.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

-- Signed chain heads: the audit ring's signature over the checkpoint's canonical bytes.
CREATE TABLE audit_checkpoints (
    seq        INTEGER PRIMARY KEY,
    head_hash  BLOB NOT NULL,
    time       INTEGER NOT NULL,
    kid        TEXT NOT NULL,
    signature  BLOB NOT NULL
);

-- Work that one replica does at a time (scheduled rotation): taken with a conditional
-- upsert, held until expires_at.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
