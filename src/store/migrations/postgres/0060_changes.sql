-- The change feed (docs/deployment.md, "Replicas and the change feed"). Every write that
-- changes something a replica holds in memory (API keys, key files, OAuth servers, custom
-- roles, key versions) or must refuse at once (a revoked session or access token) adds a
-- row here in the same transaction. Replicas apply the rows in `seq` order.
--
-- `change_head` hands out `seq`: the one row is updated first thing in the writing
-- transaction's change write, so its row lock (PostgreSQL) or the write lock (SQLite)
-- is held until commit. Sequence numbers therefore become visible in order and without
-- gaps, which lets a reader tell "nothing new" from "rows were purged before I read them".
CREATE TABLE change_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL
);
INSERT INTO change_head (id, seq) VALUES (1, 0);

CREATE TABLE changes (
    seq    BIGINT PRIMARY KEY,
    topic  TEXT NOT NULL,
    key    TEXT NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX changes_at ON changes (at);

-- The per-table version counters the feed replaces.
DELETE FROM meta WHERE key IN
    ('api_keys_version', 'key_files_version', 'oauth_servers_version', 'roles_version', 'keys_version');
