-- End-to-end encrypted conversations (MLS, issue 14). The server keeps only
-- what it orders by: whether a conversation is encrypted and its MLS epoch
-- (the epoch the next commit must name; the first commit for it wins).
ALTER TABLE conversations
    ADD COLUMN encrypted BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN mls_epoch BIGINT NOT NULL DEFAULT 0;

-- Each device's MLS KeyPackages (TLS bytes, checked at upload). A claim
-- deletes the oldest ordinary one; the last-resort one (at most one per
-- device) is handed out and kept.
CREATE TABLE key_packages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   BIGINT NOT NULL REFERENCES devices(id),
    data        BYTEA NOT NULL,
    last_resort BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX key_packages_device ON key_packages(device_id, last_resort, id);
