-- caseline broker schema, version 1.
CREATE TABLE agencies (
    agency_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    country     TEXT NOT NULL,
    root_key    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    device_id   BLOB PRIMARY KEY,
    agency_id   TEXT NOT NULL REFERENCES agencies(agency_id),
    user_id     TEXT NOT NULL,
    cert        BLOB NOT NULL,
    serial      INTEGER NOT NULL,
    not_after   INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_by_user ON devices(agency_id, user_id);

CREATE TABLE revocation_lists (
    agency_id   TEXT PRIMARY KEY REFERENCES agencies(agency_id),
    number      INTEGER NOT NULL,
    data        BLOB NOT NULL
) STRICT;

CREATE TABLE sessions (
    token_hash  BLOB PRIMARY KEY,
    device_id   BLOB NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_device ON sessions(device_id);

CREATE TABLE cases (
    case_id         BLOB PRIMARY KEY,
    retention_days  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;

-- One row per log entry.  ``slot_*`` are set for updates: the idempotency key.
CREATE TABLE entries (
    case_id     BLOB NOT NULL REFERENCES cases(case_id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    body        BLOB NOT NULL,
    receipt     BLOB NOT NULL,
    slot_sender BLOB,
    slot_epoch  INTEGER,
    slot_counter INTEGER,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (case_id, seq)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX entries_by_slot ON entries(case_id, slot_sender, slot_epoch, slot_counter)
    WHERE slot_sender IS NOT NULL;

-- Security events, hash-chained so that an edit or a deletion shows.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
) STRICT;
