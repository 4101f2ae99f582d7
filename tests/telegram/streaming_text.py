"""Text to stream in the streaming tests: long answers and a growing reply fed in pieces."""

from __future__ import annotations

import asyncio
import random

from fleetgram.telegram.streaming import StreamingReply


def answer_of(length: int, seed: int = 1) -> str:
    """Paragraphs of words, ``length`` characters in all."""
    rng = random.Random(seed)
    words = "the fleet of workers answers every task while the master keeps the queue".split()
    paragraphs: list[str] = []
    size = 0
    while size < length:
        paragraph = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:length].rstrip()


async def stream(reply: StreamingReply, text: str, *, pause: float = 0.004) -> None:
    """Append ``text`` to ``reply`` in pieces of 5-60 characters, as Claude's deltas come."""
    rng = random.Random(len(text))
    position = 0
    while position < len(text):
        step = rng.randint(5, 60)
        reply.append(text[position : position + step])
        position += step
        await asyncio.sleep(pause)
