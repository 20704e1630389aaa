-- Message edits, deletion for everyone, reactions, and full-text search.

ALTER TABLE messages
    ADD COLUMN edited_at  BIGINT,   -- last edit
    ADD COLUMN deleted_at BIGINT,   -- tombstone: body is '{}'
    ADD COLUMN reactions  TEXT;     -- JSON {emoji: [user_id]}, NULL when none

-- Searchable text of text messages and media captions, NULL for anything
-- else and for deleted messages: edits re-index, deletions vanish. The hit
-- marker characters U+0002/U+0003 are stripped from it.
ALTER TABLE messages ADD COLUMN search_text TEXT GENERATED ALWAYS AS (
    CASE
        WHEN deleted_at IS NOT NULL THEN NULL
        WHEN kind = 'text' AND jsonb_typeof(body::jsonb -> 'text') = 'string'
            THEN translate(body::jsonb ->> 'text', E'\x02\x03', '')
        WHEN kind IN ('image', 'voice', 'file') AND jsonb_typeof(body::jsonb -> 'caption') = 'string'
            THEN translate(body::jsonb ->> 'caption', E'\x02\x03', '')
    END
) STORED;

CREATE INDEX messages_search ON messages
    USING GIN (to_tsvector('simple', search_text))
    WHERE search_text IS NOT NULL;
