-- Confab schema, PostgreSQL flavour: the SQLite schema (0001_init + 0002_social)
-- in one file. Ids are BIGINT identities; times are BIGINT milliseconds since
-- the Unix epoch; flags are BOOLEAN; token hashes BYTEA. Message bodies are
-- JSON kept as TEXT, so the exact bytes the server wrote come back.
--
-- Text that is compared or sorted (usernames, direct keys, client_msg_id)
-- uses the "C" collation: byte order, like SQLite's BINARY, whatever the
-- database's default locale.

CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT NOT NULL,
    username_key    TEXT COLLATE "C" NOT NULL UNIQUE,   -- lower-cased username
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    avatar_media_id TEXT,
    status_text     TEXT,
    created_at      BIGINT NOT NULL,
    hide_presence   BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen       BIGINT
);

CREATE TABLE devices (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    name        TEXT,
    public_key  TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX devices_user ON devices(user_id);

-- Access and refresh tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens (
    hash        BYTEA PRIMARY KEY,
    device_id   BIGINT NOT NULL REFERENCES devices(id),
    kind        SMALLINT NOT NULL,          -- 0 access, 1 refresh
    expires_at  BIGINT NOT NULL,
    spent_at    BIGINT                      -- refresh tokens: when exchanged
);
CREATE INDEX tokens_device ON tokens(device_id);

CREATE TABLE conversations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL,          -- 'direct' | 'group'
    title           TEXT,
    direct_key      TEXT COLLATE "C" UNIQUE, -- 'low:high' user ids, direct only
    last_seq        BIGINT NOT NULL DEFAULT 0, -- seq of the newest message
    created_by      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    avatar_media_id TEXT,
    members_can_add BOOLEAN NOT NULL DEFAULT FALSE,
    member_count    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE members (
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    user_id         BIGINT NOT NULL REFERENCES users(id),
    role            TEXT NOT NULL,          -- 'owner' | 'admin' | 'member'
    joined_seq      BIGINT NOT NULL,        -- sees messages after this seq
    read_seq        BIGINT NOT NULL DEFAULT 0,
    muted           BOOLEAN NOT NULL DEFAULT FALSE,
    joined_at       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_user ON members(user_id, conversation_id);

CREATE TABLE messages (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    sender_id       BIGINT NOT NULL,
    client_msg_id   TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,          -- JSON, as written
    ts              BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
-- Idempotency: one message per (client_msg_id, sender, conversation).
CREATE UNIQUE INDEX messages_idempotency ON messages(client_msg_id, sender_id, conversation_id);

-- Per-device delivered cursor.
CREATE TABLE device_cursors (
    device_id       BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    delivered_seq   BIGINT NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
);

-- Users who left or were removed: they get `forbidden`, strangers `not_found`.
CREATE TABLE former_members (
    conversation_id BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    left_seq        BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

-- Pending friend requests; answered ones are deleted.
CREATE TABLE friend_requests (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_user   BIGINT NOT NULL REFERENCES users(id),
    to_user     BIGINT NOT NULL REFERENCES users(id),
    message     TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (from_user, to_user)
);
CREATE INDEX friend_requests_to ON friend_requests(to_user);

-- Friendship, one row per direction.
CREATE TABLE friendships (
    user_id     BIGINT NOT NULL,
    friend_id   BIGINT NOT NULL,
    since       BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE blocks (
    blocker_id  BIGINT NOT NULL,
    blocked_id  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_blocked ON blocks(blocked_id, blocker_id);

-- Who a message mentions (members only), for unread_mentions.
CREATE TABLE mentions (
    user_id         BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
);
