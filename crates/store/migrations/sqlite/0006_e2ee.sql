-- End-to-end encrypted conversations (MLS, issue 14). The server keeps only
-- what it orders by: whether a conversation is encrypted and its MLS epoch
-- (the epoch the next commit must name; the first commit for it wins).
ALTER TABLE conversations ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN mls_epoch INTEGER NOT NULL DEFAULT 0;

-- Each device's MLS KeyPackages (TLS bytes, checked at upload). A claim
-- deletes the oldest ordinary one; the last-resort one (at most one per
-- device) is handed out and kept.
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    data        BLOB NOT NULL,
    last_resort INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX key_packages_device ON key_packages(device_id, last_resort, id);
