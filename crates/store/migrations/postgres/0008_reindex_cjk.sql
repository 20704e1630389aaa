-- Han characters that jieba leaves side by side are now indexed one by one
-- as well as in pairs (so a query's lone character, such as 新 in 新消息,
-- finds "…的新消息"). Index everything again, in the background.
INSERT INTO search_queue (conversation_id, seq)
SELECT conversation_id, seq FROM messages
WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
ORDER BY conversation_id, seq;
