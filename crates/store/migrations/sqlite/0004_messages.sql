-- Message edits, deletion for everyone, reactions, and full-text search.

ALTER TABLE messages ADD COLUMN edited_at INTEGER;   -- last edit
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;  -- tombstone: body is '{}'
ALTER TABLE messages ADD COLUMN reactions TEXT;      -- JSON {emoji: [user_id]}, NULL when none

-- Searchable text of text messages and media captions. The rowid is
-- conversation_id * 2^32 + seq, so a message's entry is found by key.
-- Kept in sync by the triggers below: edits re-index, deletions vanish.
-- The hit marker characters U+0002/U+0003 are stripped from what is indexed.
CREATE VIRTUAL TABLE message_search USING fts5(
    text,
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN NEW.deleted_at IS NULL AND (
    (NEW.kind = 'text' AND json_type(NEW.body, '$.text') = 'text') OR
    (NEW.kind IN ('image', 'voice', 'file') AND json_type(NEW.body, '$.caption') = 'text'))
BEGIN
    INSERT INTO message_search (rowid, text) VALUES (
        NEW.conversation_id * 4294967296 + NEW.seq,
        replace(replace(json_extract(NEW.body, CASE NEW.kind WHEN 'text' THEN '$.text' ELSE '$.caption' END),
            char(2), ''), char(3), ''));
END;

-- One trigger (SQLite does not promise an order between triggers).
CREATE TRIGGER message_search_reindex AFTER UPDATE OF body, deleted_at ON messages
BEGIN
    DELETE FROM message_search WHERE rowid = OLD.conversation_id * 4294967296 + OLD.seq;
    INSERT INTO message_search (rowid, text)
    SELECT NEW.conversation_id * 4294967296 + NEW.seq,
           replace(replace(json_extract(NEW.body, CASE NEW.kind WHEN 'text' THEN '$.text' ELSE '$.caption' END),
               char(2), ''), char(3), '')
    WHERE NEW.deleted_at IS NULL AND (
        (NEW.kind = 'text' AND json_type(NEW.body, '$.text') = 'text') OR
        (NEW.kind IN ('image', 'voice', 'file') AND json_type(NEW.body, '$.caption') = 'text'));
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages
BEGIN
    DELETE FROM message_search WHERE rowid = OLD.conversation_id * 4294967296 + OLD.seq;
END;

-- What was there before this migration.
INSERT INTO message_search (rowid, text)
SELECT conversation_id * 4294967296 + seq,
       replace(replace(json_extract(body, CASE kind WHEN 'text' THEN '$.text' ELSE '$.caption' END),
           char(2), ''), char(3), '')
FROM messages
WHERE (kind = 'text' AND json_type(body, '$.text') = 'text')
   OR (kind IN ('image', 'voice', 'file') AND json_type(body, '$.caption') = 'text');
