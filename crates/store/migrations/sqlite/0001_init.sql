-- Confab schema, SQLite flavour. Ids are INTEGER PRIMARY KEY (rowid aliases);
-- times are milliseconds since the Unix epoch.

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL,
    username_key    TEXT NOT NULL UNIQUE,   -- lower-cased username
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    avatar_media_id TEXT,
    status_text     TEXT,
    created_at      INTEGER NOT NULL
);

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    name        TEXT,
    public_key  TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX devices_user ON devices(user_id);

-- Access and refresh tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens (
    hash        BLOB PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    kind        INTEGER NOT NULL,           -- 0 access, 1 refresh
    expires_at  INTEGER NOT NULL,
    spent_at    INTEGER                     -- refresh tokens: when exchanged
) WITHOUT ROWID;
CREATE INDEX tokens_device ON tokens(device_id);

CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,              -- 'direct' | 'group'
    title       TEXT,
    direct_key  TEXT UNIQUE,                -- 'low:high' user ids, direct only
    last_seq    INTEGER NOT NULL DEFAULT 0, -- seq of the newest message
    created_by  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE members (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    user_id         INTEGER NOT NULL REFERENCES users(id),
    role            TEXT NOT NULL,          -- 'owner' | 'admin' | 'member'
    joined_seq      INTEGER NOT NULL,       -- sees messages after this seq
    read_seq        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members(user_id, conversation_id);

CREATE TABLE messages (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    sender_id       INTEGER NOT NULL,
    client_msg_id   TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,          -- JSON
    ts              INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
-- Idempotency: one message per (client_msg_id, sender, conversation).
CREATE UNIQUE INDEX messages_idempotency ON messages(client_msg_id, sender_id, conversation_id);

-- Per-device delivered cursor.
CREATE TABLE device_cursors (
    device_id       INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;
