-- Search indexing leaves the commit: the commit that acks a message only
-- queues its key (a trigger, one small row); the background indexer cuts the
-- text into words (jieba for Chinese, bigrams for kana and Hangul, folded
-- words otherwise) and writes them to message_index, then deletes the keys
-- it handled. Whatever is not in search_queue is in the index.

DROP TRIGGER message_search_insert;
DROP TRIGGER message_search_reindex;
DROP TRIGGER message_search_delete;
DROP TABLE message_search;

-- Space-joined tokens (already folded) under the ascii tokenizer, which
-- keeps every non-ASCII character inside its token. The rowid is
-- conversation_id * 2^32 + seq.
CREATE VIRTUAL TABLE message_index USING fts5(tokens, tokenize = 'ascii');

-- Message keys whose index entry may be stale, oldest first.
CREATE TABLE search_queue (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL
);

CREATE TRIGGER search_queue_insert AFTER INSERT ON messages
WHEN NEW.kind IN ('text', 'image', 'voice', 'file')
BEGIN
    INSERT INTO search_queue (conversation_id, seq) VALUES (NEW.conversation_id, NEW.seq);
END;

CREATE TRIGGER search_queue_update AFTER UPDATE OF body, deleted_at ON messages
WHEN NEW.kind IN ('text', 'image', 'voice', 'file')
BEGIN
    INSERT INTO search_queue (conversation_id, seq) VALUES (NEW.conversation_id, NEW.seq);
END;

CREATE TRIGGER search_queue_delete AFTER DELETE ON messages
WHEN OLD.kind IN ('text', 'image', 'voice', 'file')
BEGIN
    INSERT INTO search_queue (conversation_id, seq) VALUES (OLD.conversation_id, OLD.seq);
END;

-- What was there before: indexed anew by the indexer.
INSERT INTO search_queue (conversation_id, seq)
SELECT conversation_id, seq FROM messages
WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
ORDER BY conversation_id, seq;
