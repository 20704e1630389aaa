-- The idempotency index leads with the conversation, then the sender, then
-- the client's id: a conversation's keys sit together in the index, so a
-- commit touches a few leaf pages per conversation instead of one random
-- page per message (client ids are random), and the pages a busy
-- conversation writes stay in the cache as the index grows.
DROP INDEX messages_idempotency;
CREATE UNIQUE INDEX messages_idempotency ON messages(conversation_id, sender_id, client_msg_id);
