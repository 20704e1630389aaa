-- Every two adjacent Han characters of a run are now indexed too, so a
-- query finds a stretch that crosses jieba's word boundaries ("式系" in
-- "分布式系统"). Index everything again, in the background.
INSERT INTO search_queue (conversation_id, seq)
SELECT conversation_id, seq FROM messages
WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
ORDER BY conversation_id, seq;
