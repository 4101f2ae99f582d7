-- fleetgram's schema, version 1. The same file runs on SQLite and on Postgres: it keeps to the
-- SQL both understand. The only per-dialect piece is {{auto_id}} (an auto-numbered primary key),
-- substituted by fleetgram/store/migrate.py. Times are TIMESTAMPTZ on Postgres; on SQLite they
-- hold fixed-width UTC text ("2026-01-25 12:00:00.000000+00:00"), which sorts in time order.

-- The task queue: the seed's table, kept, plus attempts, pinning, usage and the cancel request.
CREATE TABLE tasks (
  task_id TEXT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  chat_id BIGINT NOT NULL,
  title TEXT NOT NULL DEFAULT '',
  prompt TEXT NOT NULL,
  priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'assigned', 'running', 'completed', 'failed', 'cancelled')),
  assigned_worker_id TEXT,
  result TEXT,
  created_at TIMESTAMPTZ NOT NULL,
  assigned_at TIMESTAMPTZ,
  started_at TIMESTAMPTZ,
  completed_at TIMESTAMPTZ,
  source TEXT NOT NULL DEFAULT 'master' CHECK (source IN ('master', 'direct')),
  pinned_worker TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  error TEXT,
  cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cache_read_tokens BIGINT NOT NULL DEFAULT 0,
  cache_write_tokens BIGINT NOT NULL DEFAULT 0,
  cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- The claim query: WHERE status = 'pending' ORDER BY priority, created_at, task_id.
CREATE INDEX tasks_queue ON tasks (status, priority, created_at, task_id);
CREATE INDEX tasks_worker ON tasks (assigned_worker_id, status);
CREATE INDEX tasks_user ON tasks (user_id, status);

-- Worker slots: the seed's table, kept (worker_id is the slot name, worker1..workerN), plus the
-- facts a slot's state is derived from. `status` is the seed's column; the state is derived
-- (policy.worker_state), so the store leaves it NULL.
CREATE TABLE workers (
  worker_id TEXT PRIMARY KEY,
  display_name TEXT NOT NULL,
  telegram_username TEXT,
  status TEXT,
  current_task_id TEXT,
  last_heartbeat TIMESTAMPTZ,
  enabled BOOLEAN NOT NULL DEFAULT FALSE,
  started_at TIMESTAMPTZ,
  ready_at TIMESTAMPTZ,
  error TEXT,
  state_since TIMESTAMPTZ
);

-- The outbox: an announcement is written with the state change, and sent after.
CREATE TABLE events (
  id {{auto_id}},
  kind TEXT NOT NULL,
  task_id TEXT,
  chat_id BIGINT,
  payload TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  delivered_at TIMESTAMPTZ
);

CREATE INDEX events_undelivered ON events (id) WHERE delivered_at IS NULL;

-- A worker's Claude conversations with a user; one of them is the active one.
CREATE TABLE conversations (
  id {{auto_id}},
  worker TEXT NOT NULL,
  user_id BIGINT NOT NULL,
  active BOOLEAN NOT NULL DEFAULT TRUE,
  created_at TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX conversations_active ON conversations (worker, user_id) WHERE active;

-- The turns of a conversation: the Messages API content blocks as sent, as JSON text.
CREATE TABLE turns (
  conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
  content TEXT NOT NULL,
  task_id TEXT,
  created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (conversation_id, seq)
);

-- The usage ledger: one row per Claude API call (agent mode makes many per task). It is an
-- audit record, so it has no foreign key to tasks and outlives purged tasks.
CREATE TABLE api_calls (
  id {{auto_id}},
  task_id TEXT,
  worker TEXT NOT NULL,
  model TEXT NOT NULL,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cache_read_tokens BIGINT NOT NULL DEFAULT 0,
  cache_write_tokens BIGINT NOT NULL DEFAULT 0,
  cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
  stop_reason TEXT,
  duration_s DOUBLE PRECISION NOT NULL DEFAULT 0,
  created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX api_calls_task ON api_calls (task_id);
