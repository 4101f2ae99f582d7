-- Version 9: the chat a worker bot was added from (/addworker), so that on Kubernetes the
-- operator can say there when the bot's worker is started, or why it cannot be. Additive only.
ALTER TABLE managed_tokens ADD COLUMN chat_id BIGINT;
