-- Version 8: worker bot tokens added at run time (/addworker, Bot API 9.6 managed bots). Each
-- token is stored encrypted (Fernet, TOKEN_ENCRYPTION_KEY; fleetgram/tokens.py), never in
-- plain text; at start-up they join WORKER_TOKEN_POOL's slots in the order they were added.
CREATE TABLE managed_tokens (
  slot TEXT PRIMARY KEY,
  bot_id BIGINT NOT NULL,
  username TEXT NOT NULL,
  token_encrypted {{bytes}} NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);
