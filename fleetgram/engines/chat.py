"""The chat engine: the Messages API, talk only (WORKER_ENGINE=chat, the default).

Files sent with the prompt (photos, image and PDF documents, text files: the task's
attachments, see fleetgram.media) go with this turn only, as image / document / text blocks;
the stored conversation keeps placeholders for images and PDFs, so later turns do not resend
them.

The conversation's turns live in the store; before a call they are compacted when they near
the context window (fleetgram.claude.compaction), and a "prompt is too long" from the API is
answered once by trimming hard and calling again.
"""

from __future__ import annotations

import logging
from typing import Any

from fleetgram.claude.compaction import (
    SUMMARY_INSTRUCTION,
    Compaction,
    compact,
    estimate_text_tokens,
    estimate_tokens,
    needs_compaction,
    trim,
)
from fleetgram.claude.deadline import CallLimits
from fleetgram.claude.runner import ClaudeRunner, TurnOutcome, is_prompt_too_long
from fleetgram.config import Settings
from fleetgram.domain import Attachment, utcnow
from fleetgram.engines.base import TurnContext, TurnResult
from fleetgram.media import history_blocks, request_blocks
from fleetgram.spend import task_cap
from fleetgram.store.base import Store
from fleetgram.worker.steps import StepFailed

log = logging.getLogger(__name__)


class ChatEngine:
    kind = "chat"

    def __init__(self, runner: ClaudeRunner, store: Store, settings: Settings) -> None:
        self.runner = runner
        self.store = store
        self.settings = settings
        if runner.limits == CallLimits():  # a runner built without limits gets the settings'
            runner.limits = CallLimits(
                wall=settings.claude_timeout, stall=settings.claude_stall_timeout
            )
        # Tokens the last call of each conversation carried (prompt and answer): compaction.
        self.context_tokens: dict[int, int] = {}

    async def run(self, prompt: str, ctx: TurnContext) -> TurnResult:
        # The user's daily budget: what this task may spend, checked as Claude streams.
        ctx.meter.cap = await task_cap(self.store, self.settings, ctx.task.user_id, utcnow())
        ctx.meter.check()
        history = await self._history(prompt, ctx)
        files = await self._attachments(ctx)
        content = request_blocks(prompt, _triples(files)) if files else None
        shown = [False]

        def on_text(delta: str) -> None:
            shown[0] = True
            ctx.text(delta)

        try:
            outcome = await self._call(history, prompt, ctx, on_text, content)
        except Exception as error:
            if not is_prompt_too_long(error) or not history or shown[0]:
                raise
            # Our estimate fell short of the real count: trim hard and try once more.
            history = await self._compact(history, ctx, summarise=False)
            outcome = await self._call(history, prompt, ctx, on_text, content)
        if files:  # the conversation keeps placeholders, not the files' base64
            kept = {"role": "user", "content": history_blocks(prompt, _triples(files))}
            outcome = TurnOutcome(outcome.text, [kept, *outcome.turns[1:]], outcome.stop_reason)
        await self._keep(outcome, ctx)
        return TurnResult(outcome.text)

    async def interrupt(self) -> None:
        """Nothing to do: cancelling the run's asyncio task closes the HTTP stream."""

    async def close(self) -> None:
        return None

    async def _call(self, history: list[dict[str, Any]], prompt: str, ctx: TurnContext,
                    on_text: Any, content: list[dict[str, Any]] | None = None) -> TurnOutcome:
        if content is None:
            return await self.runner.run(history, prompt, on_text=on_text, meter=ctx.meter)
        return await self.runner.run(history, prompt, on_text=on_text, meter=ctx.meter,
                                     content=content)

    async def _attachments(self, ctx: TurnContext) -> list[Attachment]:
        task_id = ctx.task.id
        return list(await ctx.persist(lambda: self.store.load_attachments(task_id)))

    async def _history(self, prompt: str, ctx: TurnContext) -> list[dict[str, Any]]:
        conversation = ctx.conversation
        history: list[dict[str, Any]] = await ctx.persist(
            lambda: self.store.load_turns(conversation))
        known = self.context_tokens.get(conversation, 0)
        size = max(known, estimate_tokens(history)) + estimate_text_tokens(prompt)
        settings = self.settings
        if history and needs_compaction(size, settings.claude_context_window, settings.compact_at):
            history = await self._compact(history, ctx, summarise=True)
        return history

    async def _compact(self, history: list[dict[str, Any]], ctx: TurnContext, *,
                       summarise: bool) -> list[dict[str, Any]]:
        async def summary(old: list[dict[str, Any]]) -> str:
            return await self.runner.summarise(old, SUMMARY_INSTRUCTION, meter=ctx.meter)

        window = self.settings.claude_context_window
        if summarise:
            result = await compact(history, window=window, summarise=summary)
        else:
            kept = trim(history, int(window * 0.25))
            result = Compaction(kept, summarised=0, dropped=len(history) - len(kept))
        conversation = ctx.conversation
        try:
            await ctx.persist(lambda: self.store.replace_turns(conversation, result.turns))
        except StepFailed:
            log.warning("could not store the compacted conversation",
                        extra={"task": ctx.task.id})
        self.context_tokens.pop(conversation, None)
        log.info("conversation compacted", extra={
            "task": ctx.task.id, "summarised": result.summarised, "dropped": result.dropped})
        await ctx.note(result.note)
        return result.turns

    async def _keep(self, outcome: TurnOutcome, ctx: TurnContext) -> None:
        """Append the turn to the conversation (a failure loses only the memory of it)."""
        conversation, task_id = ctx.conversation, ctx.task.id
        try:
            await ctx.persist(lambda: self.store.append_turns(
                conversation, outcome.turns, task_id))
        except StepFailed:
            log.warning("could not store the conversation's new turns", extra={"task": task_id})
        if ctx.meter.calls:
            last = ctx.meter.calls[-1].usage
            self.context_tokens[conversation] = (
                last.input_tokens + last.cache_read_tokens + last.cache_write_tokens
                + last.output_tokens)


def _triples(files: list[Attachment]) -> list[tuple[str, str | None, bytes]]:
    return [(f.name, f.mime, f.data) for f in files]
