-- Search indexing leaves the commit: the generated column and its GIN index
-- (updated inside every commit) give way to message_search, written by the
-- background indexer from search_queue. The commit that acks a message only
-- queues its key. Whatever is not in search_queue is in the index.

DROP INDEX IF EXISTS messages_search;
ALTER TABLE messages DROP COLUMN IF EXISTS search_text;

-- Tokens cut by Confab (jieba for Chinese, bigrams for kana and Hangul,
-- folded words otherwise), stored verbatim as lexemes with positions.
CREATE TABLE message_search (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    tokens          TSVECTOR NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE INDEX message_search_tokens ON message_search USING GIN (tokens);

-- Message keys whose index entry may be stale, oldest first.
CREATE TABLE search_queue (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL
);

-- One INSERT per statement for the committer's multi-row inserts.
CREATE FUNCTION search_queue_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_queue (conversation_id, seq)
    SELECT conversation_id, seq FROM inserted
    WHERE kind IN ('text', 'image', 'voice', 'file');
    RETURN NULL;
END $$;

CREATE TRIGGER search_queue_insert AFTER INSERT ON messages
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION search_queue_inserted();

CREATE FUNCTION search_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO search_queue (conversation_id, seq) VALUES (OLD.conversation_id, OLD.seq);
    ELSE
        INSERT INTO search_queue (conversation_id, seq) VALUES (NEW.conversation_id, NEW.seq);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER search_queue_update AFTER UPDATE ON messages
FOR EACH ROW
WHEN (NEW.kind IN ('text', 'image', 'voice', 'file')
      AND (OLD.body IS DISTINCT FROM NEW.body OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at))
EXECUTE FUNCTION search_queue_changed();

CREATE TRIGGER search_queue_delete AFTER DELETE ON messages
FOR EACH ROW
WHEN (OLD.kind IN ('text', 'image', 'voice', 'file'))
EXECUTE FUNCTION search_queue_changed();

-- What was there before: indexed anew by the indexer.
INSERT INTO search_queue (conversation_id, seq)
SELECT conversation_id, seq FROM messages
WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
ORDER BY conversation_id, seq;
