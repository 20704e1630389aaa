-- Uploaded media (images, voice notes, files). The bytes live in the blob
-- store under the content's SHA-256; this is the metadata and ownership.
CREATE TABLE media (
    id          TEXT PRIMARY KEY,            -- random, url-safe
    owner_id    INTEGER NOT NULL REFERENCES users(id),
    sha256      TEXT NOT NULL,               -- lower-case hex; the blob key
    size        INTEGER NOT NULL,
    mime        TEXT NOT NULL,
    kind        TEXT NOT NULL,               -- 'image' | 'voice' | 'file'
    width       INTEGER,
    height      INTEGER,
    duration_ms INTEGER,
    thumbnail   INTEGER NOT NULL DEFAULT 0,  -- 1 once the thumbnail is stored
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX media_owner ON media(owner_id);

-- Which messages reference which media: members who can see the message
-- may fetch the media.
CREATE TABLE message_media (
    media_id        TEXT NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
) WITHOUT ROWID;
