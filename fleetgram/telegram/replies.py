"""The streaming reply a worker (and the benchmark's single-bot baseline) shows an answer with,
built from the settings in one place so that both follow the same streaming rules."""

from __future__ import annotations

import telegram

from fleetgram.config import Settings
from fleetgram.telegram.streaming import StreamingReply


def reply_for(bot: telegram.Bot, chat_id: int, settings: Settings, *, header: str,
              known_floor: int | None = None) -> StreamingReply:
    return StreamingReply(bot, chat_id, header=header,
                          min_interval=settings.stream_edit_interval,
                          drafts=settings.stream_drafts, known_floor=known_floor)
