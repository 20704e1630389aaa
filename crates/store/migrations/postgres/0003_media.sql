-- Uploaded media (images, voice notes, files). The bytes live in the blob
-- store under the content's SHA-256; this is the metadata and ownership.
CREATE TABLE media (
    id          TEXT COLLATE "C" PRIMARY KEY,  -- random, url-safe
    owner_id    BIGINT NOT NULL REFERENCES users(id),
    sha256      TEXT NOT NULL,                 -- lower-case hex; the blob key
    size        BIGINT NOT NULL,
    mime        TEXT NOT NULL,
    kind        TEXT NOT NULL,                 -- 'image' | 'voice' | 'file'
    width       BIGINT,
    height      BIGINT,
    duration_ms BIGINT,
    thumbnail   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX media_owner ON media(owner_id);

-- Which messages reference which media: members who can see the message
-- may fetch the media.
CREATE TABLE message_media (
    media_id        TEXT COLLATE "C" NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
);
