-- The search index keeps no copy of the text it indexes: search only asks
-- it for MATCH and bm25 (which need the token positions and sizes, not
-- the text), and the message itself comes from messages. A contentless
-- table with contentless_delete writes one row less per message (the
-- copy in message_index_content) and can still drop a message's entry by
-- rowid when it is edited or deleted.
DROP TABLE message_index;
CREATE VIRTUAL TABLE message_index USING fts5(
    tokens,
    tokenize = 'ascii',
    content = '',
    contentless_delete = 1
);

-- Index everything again, in the background, from the messages table
-- (which also gives every message the tokens of today's cutting: Han
-- characters left side by side by jieba indexed one by one too).
DELETE FROM search_queue;
INSERT INTO search_queue (conversation_id, seq)
SELECT conversation_id, seq FROM messages
WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
ORDER BY conversation_id, seq;
