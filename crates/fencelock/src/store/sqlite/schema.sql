-- fencelock SQLite lock store, schema version 1.
--
-- Created in one transaction together with the file's marker:
--   PRAGMA application_id = 0x466E4C6B ('FnLk'), PRAGMA user_version = 1.
-- A file without that marker is refused, never silently taken over.
-- All times are wall-clock milliseconds since the Unix epoch: the file is shared by
-- processes that have no monotonic clock in common.

-- One row per held key (expired rows stay until swept; they count as free).
-- `holder` is the optional holder description shown by `status`; it lives in the
-- lock's row so it shares the lock's expiry and disappears with it.
CREATE TABLE fencelock_lock (
    key        TEXT    PRIMARY KEY NOT NULL,
    value      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL,
    holder     TEXT
) WITHOUT ROWID;
CREATE INDEX fencelock_lock_expiry ON fencelock_lock (expires_ms);

-- One fencing counter per key. It outlives the lock; it may be swept after 24 h
-- unused on a key nobody holds, and then the floor below is raised above it.
CREATE TABLE fencelock_counter (
    key        TEXT    PRIMARY KEY NOT NULL,
    counter    INTEGER NOT NULL,
    touched_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX fencelock_counter_touched ON fencelock_counter (touched_ms);

-- Store-wide numbers. 'counter_floor': every swept counter was at most this, and a
-- new counter starts above it.
CREATE TABLE fencelock_meta (
    name  TEXT    PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO fencelock_meta (name, value) VALUES ('counter_floor', 0);
