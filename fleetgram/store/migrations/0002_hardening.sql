-- Version 2: what the hardening of issue 7 needs the store to remember. Additive only, so a
-- version-1 database keeps every row; the same file runs on SQLite and on Postgres.

-- The Telegram message a task was made from: an edit of that message edits the pending task.
ALTER TABLE tasks ADD COLUMN message_id BIGINT;
CREATE INDEX tasks_message ON tasks (chat_id, message_id);

-- purge_finished: finished tasks by completion time, the usage ledger by age.
CREATE INDEX tasks_completed ON tasks (completed_at);
CREATE INDEX api_calls_created ON api_calls (created_at);

-- The outbox counts the sends that failed in a way Telegram may still have shown (a lost
-- reply, a timeout), so that a notice is never sent more than twice.
ALTER TABLE events ADD COLUMN ambiguous_sends INTEGER NOT NULL DEFAULT 0;

-- The worker-chat messages showing a task still in progress: after a crash the restarted
-- worker finds them here and leaves the "interrupted" note on each.
CREATE TABLE worker_replies (
  id {{auto_id}},
  worker TEXT NOT NULL,
  task_id TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  message_id BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX worker_replies_message ON worker_replies (worker, task_id, chat_id, message_id);
