-- Version 7: follow-ups by reply (issue 11). Additive only; the same file runs on SQLite and
-- on Postgres. Both tables are purged with the tasks (SqlStore.purge_finished).

-- Every message the fleet sent about a task (receipts and notices in the master chat, answers
-- in worker chats), so that a Telegram reply to one of them names its task. `kind` says which:
-- the receipt's Cancel button is removed when the task ends. `bot` ("master" or a worker slot)
-- is part of the key: a user's private chat has the same id with every bot, and each bot's
-- chat numbers its messages from 1.
CREATE TABLE task_messages (
  bot TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  message_id BIGINT NOT NULL,
  task_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (bot, chat_id, message_id)
);

CREATE INDEX task_messages_task ON task_messages (task_id, kind);

-- Which task a follow-up continues (written before the task exists, like its attachments, so
-- no worker claims it without the link) and which conversation a task ran in (written by the
-- worker when it opens the conversation; agent mode keeps no turns, so turns can't say it).
CREATE TABLE task_threads (
  task_id TEXT PRIMARY KEY,
  follow_up_of TEXT,
  conversation_id BIGINT,
  created_at TIMESTAMPTZ NOT NULL
);
