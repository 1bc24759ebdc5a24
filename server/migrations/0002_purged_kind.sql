-- caseline broker schema, version 2: a retention-purged update is its own kind of entry.
-- Version 1 marked it only by an empty body on an 'update' row, which start-up read as a
-- malformed update (the case became unavailable).  Its slot and receipt stay: the slot is
-- the position members check and the idempotency key of a retry, the receipt carries the
-- entry hash that keeps the case's hash chain checkable.
UPDATE entries SET kind = 'purged' WHERE kind = 'update' AND length(body) = 0
