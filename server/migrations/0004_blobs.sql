-- caseline broker schema, version 4: attachment blobs (issue 15, PROTOCOL.md §9 "Blobs").
-- The bytes live in the BlobStore (``<data-dir>/blobs/``); this is what the broker knows of them.
-- ``uploads``: one row per upload, from its POST until it is deleted (by its device, or by the
-- garbage collector at ``expires_at``); ``received`` is the offset durably stored, ``address`` is
-- set once the upload is complete.  ``agency_id`` is the uploading device's: what the agency
-- quota counts.  ``blobs``: a complete blob bound to a case (the same bytes may be bound to several
-- cases, and are stored once); ``unreferenced_since`` is when the garbage collector (or the
-- upload's completion) found no accepted, unpurged update referencing it, NULL while one does.
-- ``blob_refs``: the addresses an accepted update's envelope names (``Envelope.blobs``), written
-- in the transaction that stores the update.
CREATE TABLE uploads (
    upload_id   BLOB PRIMARY KEY,
    case_id     BLOB NOT NULL,
    device_id   BLOB NOT NULL,
    agency_id   TEXT NOT NULL,
    length      INTEGER NOT NULL,
    received    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    address     BLOB
) STRICT;
CREATE INDEX uploads_by_device ON uploads(device_id) WHERE address IS NULL;
CREATE INDEX uploads_by_case ON uploads(case_id) WHERE address IS NULL;
CREATE INDEX uploads_by_expiry ON uploads(expires_at);

CREATE TABLE blobs (
    case_id     BLOB NOT NULL,
    address     BLOB NOT NULL,
    agency_id   TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    unreferenced_since INTEGER,
    PRIMARY KEY (case_id, address)
) STRICT, WITHOUT ROWID;
CREATE INDEX blobs_by_address ON blobs(address);
CREATE INDEX blobs_by_agency ON blobs(agency_id);

CREATE TABLE blob_refs (
    case_id     BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    address     BLOB NOT NULL,
    PRIMARY KEY (case_id, seq, address)
) STRICT, WITHOUT ROWID;
CREATE INDEX blob_refs_by_address ON blob_refs(case_id, address)
