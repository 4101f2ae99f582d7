"""What a worker chat offers in agent mode, beyond the chat worker's commands:
/verbose, /diff, files sent with a prompt, and the approval buttons.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from telegram import Update
from telegram.ext import CommandHandler, ContextTypes

from fleetgram.engines.base import ToolCall

if TYPE_CHECKING:
    from fleetgram.engines.agent import AgentEngine
    from fleetgram.worker.bot import WorkerBot

log = logging.getLogger(__name__)

AGENT_COMMANDS = [
    ("verbose", "How much of my work to show: 0, 1 or 2"),
    ("diff", "The patch of a task as a file: /diff t-abc23"),
]
VERBOSE_HELP = (
    "/verbose 0 — only the answer\n"
    "/verbose 1 — one line per step (commands run, files read and written)\n"
    "/verbose 2 — and what each step gave"
)


def waiting_label(call: ToolCall) -> str:
    """What /queue and /workers say a task waits for (plain text: the views escape it)."""
    detail = call.input.get("command") or call.input.get("file_path") or call.input.get("url")
    what = f"{call.name} {' '.join(str(detail).split())}" if detail else call.name
    return f"approval of {what}"[:200]


def parse_verbosity(arg: str | None) -> int | None:
    if arg is None or arg.strip() not in {"0", "1", "2"}:
        return None
    return int(arg.strip())


class AgentChat:
    """Registers the agent-mode handlers on a worker's Application (before its catch-alls)."""

    def __init__(self, worker: WorkerBot, engine: AgentEngine) -> None:
        self.worker = worker
        self.engine = engine
        self.verbosity: dict[int, int] = {}  # user id -> /verbose (default AGENT_VERBOSE)
        app = worker.app
        app.add_handler(CommandHandler("verbose", self._on_verbose))
        app.add_handler(CommandHandler("diff", self._on_diff))
        # Photos, documents and albums: the worker's ChatMedia (fleetgram.telegram.media),
        # which puts the files into the workspace in agent mode.

    def verbosity_for(self, user_id: int) -> int:
        return self.verbosity.get(user_id, self.worker.settings.agent_verbose)

    async def _on_verbose(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        level = parse_verbosity(context.args[0] if context.args else None)
        if level is None:
            await message.reply_text(
                f"Now: /verbose {self.verbosity_for(user.id)}.\n{VERBOSE_HELP}")
            return
        self.verbosity[user.id] = level
        await message.reply_text(f"👁 Verbosity {level}: " + VERBOSE_HELP.splitlines()[level]
                                 .split("— ", 1)[1] + ".")

    async def _on_diff(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        if not context.args:
            await message.reply_text("Which task? /diff t-abc23")
            return
        task_id = context.args[0].strip()
        task = await self.worker.store.get_task(task_id)
        if task is None or task.user_id != user.id:
            await message.reply_text(f"I know no task {task_id} of yours.")
            return
        if self.engine.workspace.repo is None:
            await message.reply_text(
                "My workspace is not a git repository (WORKSPACE_REPO is not set): "
                "there is no patch to show.")
            return
        patch = await self.engine.workspace.diff(task_id)
        if patch is None:
            where = f" ({task.worker} ran it)" if task.worker and task.worker != self.worker.slot \
                else ""
            await message.reply_text(f"No branch fleetgram/{task_id} in my workspace{where}.")
            return
        if not patch.strip():
            await message.reply_text(f"fleetgram/{task_id} changes nothing.")
            return
        await message.reply_document(
            io.BytesIO(patch.encode()), filename=f"{task_id}.patch",
            caption=f"fleetgram/{task_id} against its base")
