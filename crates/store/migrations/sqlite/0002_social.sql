-- Friends, blocks, group settings, mute, mentions, presence bookkeeping.

ALTER TABLE users ADD COLUMN hide_presence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_seen INTEGER;

ALTER TABLE conversations ADD COLUMN avatar_media_id TEXT;
ALTER TABLE conversations ADD COLUMN members_can_add INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE conversations SET member_count =
    (SELECT COUNT(*) FROM members WHERE members.conversation_id = conversations.id);

ALTER TABLE members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN joined_at INTEGER NOT NULL DEFAULT 0;

-- Users who left or were removed: they get `forbidden`, strangers `not_found`.
CREATE TABLE former_members (
    conversation_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    left_seq        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;

-- Pending friend requests; answered ones are deleted.
CREATE TABLE friend_requests (
    id          INTEGER PRIMARY KEY,
    from_user   INTEGER NOT NULL REFERENCES users(id),
    to_user     INTEGER NOT NULL REFERENCES users(id),
    message     TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (from_user, to_user)
);
CREATE INDEX friend_requests_to ON friend_requests(to_user);

-- Friendship, one row per direction.
CREATE TABLE friendships (
    user_id     INTEGER NOT NULL,
    friend_id   INTEGER NOT NULL,
    since       INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

CREATE TABLE blocks (
    blocker_id  INTEGER NOT NULL,
    blocked_id  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
) WITHOUT ROWID;
CREATE INDEX blocks_blocked ON blocks(blocked_id, blocker_id);

-- Who a message mentions (members only), for unread_mentions.
CREATE TABLE mentions (
    user_id         INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
) WITHOUT ROWID;
