-- caseline broker schema, version 3: the witnessed broker log (protocol version 2).
-- One RFC 9162 Merkle tree over every accepted entry of every case and every audit row,
-- in acceptance order.  ``log_leaves`` holds each leaf's exact bytes (an EntryLeaf or an
-- AuditLeaf), ``checkpoints`` every checkpoint the broker signed (one per group commit,
-- written in the same transaction as its leaves), ``cosignatures`` what witnesses returned
-- for a checkpoint (verified before they are stored), ``witness_lists`` each agency's
-- root-signed list of its witnesses.  Rows written by version 2 get their leaves, one
-- checkpoint and their log receipts on the broker's first start after this migration
-- (server/service.py, ``Broker._upgrade_log``): that needs the server key, SQL cannot do it.
CREATE TABLE log_leaves (
    idx         INTEGER PRIMARY KEY,
    leaf        BLOB NOT NULL
) STRICT;

CREATE TABLE checkpoints (
    size        INTEGER PRIMARY KEY,
    note        BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE cosignatures (
    size        INTEGER NOT NULL REFERENCES checkpoints(size),
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,
    time        INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
) STRICT;

CREATE TABLE witness_lists (
    agency_id   TEXT PRIMARY KEY REFERENCES agencies(agency_id),
    number      INTEGER NOT NULL,
    data        BLOB NOT NULL
) STRICT;

ALTER TABLE entries ADD COLUMN leaf_index INTEGER;

ALTER TABLE audit ADD COLUMN leaf_index INTEGER
