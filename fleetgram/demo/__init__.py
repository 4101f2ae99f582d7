"""`fleetgram demo`: the real fleet against the emulated Telegram (and the emulated Claude, or
the real API when ANTHROPIC_API_KEY is set), shown on a local web page where the visitor
writes to the master and the worker chats and presses their buttons. No token needed."""
