-- Version 3: what agent mode (issue 8) needs the store to remember. Additive only, so a
-- version-2 database keeps every row; the same file runs on SQLite and on Postgres, with
-- {{bytes}} (a column of bytes: BLOB on SQLite, BYTEA on Postgres) substituted by migrate.py.

-- The Claude Code session of a conversation, resumed for the next task and after a restart.
-- A new conversation (/new) starts without one.
ALTER TABLE conversations ADD COLUMN session_id TEXT;

-- What a running task waits for from its user (an approval), shown by /queue and /workers.
ALTER TABLE tasks ADD COLUMN waiting TEXT;

-- Files the user sent with a prompt, kept until the task is purged; the worker writes them
-- into its workspace. No foreign key to tasks: the master adds them before it creates the
-- task, so that no worker can claim the task without its files.
CREATE TABLE attachments (
  id {{auto_id}},
  task_id TEXT NOT NULL,
  name TEXT NOT NULL,
  mime TEXT,
  data {{bytes}} NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX attachments_task ON attachments (task_id, id);
