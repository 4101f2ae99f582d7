"""Follow-ups by reply (issue 11, item 3).

A Telegram reply to a message the fleet sent about a task (its receipt, a notice, its answer in
a worker chat) or to the user's own prompt continues that task's conversation. The master
decides where the follow-up runs (`plan_follow_up`, pure); the worker that claims it opens the
conversation (`open_follow_up`): its own one again, or a copy of the other worker's turns.

Choices:
- a follow-up of a task still pending is not a new task: the reply is added to the pending
  prompt, its files (a photo, an album, a document) to the task's (the same run answers both;
  a reply that loses the race to the claim becomes a follow-up of the running task, like any
  other);
- a follow-up of a running task waits for it on the same worker (pinned);
- a reply is a follow-up whatever it carries: text, a command that queues a prompt (/urgent),
  a photo, an album, a document, a voice note (its transcript);
- a follow-up of a finished task runs on the same worker when it is idle, otherwise on any
  worker, with the conversation carried over;
- agent mode keeps its Claude Code session in the worker's workspace: it can't move, so a
  carried follow-up says so in its header and gets the earlier task's prompt and answer as
  text in front of the new prompt.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetgram.domain import Attachment, Task, TaskState, WorkerState
from fleetgram.store.base import Store

log = logging.getLogger(__name__)

# Kinds of recorded messages (Store.record_messages).
RECEIPT, NOTICE, ANSWER = "receipt", "notice", "answer"
MASTER_BOT = "master"  # the `bot` of the master chat's messages (workers use their slot name)
# The text context carried into another workspace is bounded: a summary, not a transcript.
CONTEXT_CHARS = 6000


@dataclass(frozen=True)
class Plan:
    """Where a follow-up of `parent` goes: `merge` adds it to the pending parent's prompt;
    otherwise a new task, pinned to `pinned_worker` if set, with `note` for its receipt."""

    merge: bool = False
    pinned_worker: str | None = None
    note: str = ""


def plan_follow_up(
    parent: Task, ran_on: str | None, states: Mapping[str, WorkerState]
) -> Plan:
    """Pure: where a reply to `parent` runs. `ran_on` is the worker whose conversation holds
    the parent (None if it never started); `states` the workers' states now."""
    if parent.state == TaskState.PENDING:
        return Plan(merge=True)
    worker = ran_on or parent.worker
    if parent.state in (TaskState.ASSIGNED, TaskState.RUNNING) and worker:
        return Plan(pinned_worker=worker,
                    note=f"{worker} runs it after {parent.id}, in the same conversation.")
    if worker is None:
        return Plan(note=f"{parent.id} never started, so this starts a fresh conversation.")
    if states.get(worker) == WorkerState.IDLE:
        return Plan(pinned_worker=worker)
    state = states.get(worker)
    why = state.value if state is not None else "gone"
    return Plan(note=f"{worker} is {why}: the next free worker continues the conversation.")


def merged_prompt(prompt: str, addition: str) -> str:
    """The pending parent's prompt with the reply added."""
    return f"{prompt}\n\n{addition}"


_NAMED_TASK = re.compile(r"\bt-[a-z0-9]{5}\b")


async def parent_of_reply(
    store: Store, chat_id: int, replied_to: int, *, made_in: str, user_id: int,
    shown: str | None = None,
) -> Task | None:
    """The user's task a reply to message `replied_to` of `chat_id` is about, if any: a
    message the fleet recorded, else the user's own prompt message, else the task the bot's
    message names (`shown`: its text; every receipt and notice names its task, and the reply
    may come before the message's id is recorded). `made_in`: the chat's bot, "master"
    (TaskSource.MASTER's value) or the worker's slot."""
    task_id = await store.task_of_message(made_in, chat_id, replied_to)
    task = (await store.get_task(task_id) if task_id is not None
            else await store.find_task_by_message(chat_id, replied_to, made_in=made_in))
    if task is None and shown and (named := _NAMED_TASK.search(shown)):
        task = await store.get_task(named.group(0))
    return task if task is not None and task.user_id == user_id else None


def follow_up_line(parent_id: str) -> str:
    return f"↪️ follow-up of {parent_id}"


@dataclass(frozen=True)
class Opened:
    """The conversation a follow-up runs in, and what its header and prompt must say."""

    conversation: int
    parent_id: str
    carried_from: str | None = None  # the worker whose conversation was copied
    context: str = ""  # text put before the prompt (agent mode, carried)

    @property
    def header(self) -> str:
        line = follow_up_line(self.parent_id)
        if self.carried_from and self.context:
            line += (f" · its Claude Code session stays in {self.carried_from}'s workspace;"
                     " continuing here with the earlier text")
        elif self.carried_from:
            line += f" · conversation carried over from {self.carried_from}"
        return line


async def open_follow_up(store: Store, slot: str, task: Task, *, agent: bool) -> Opened | None:
    """If `task` is a follow-up: the conversation it continues, opened for `slot` (the same
    conversation made active again, or a copy of another worker's turns). None: not a
    follow-up, or its parent left no conversation (the caller opens one as usual)."""
    parent_id = await store.follow_up_of(task.id)
    if parent_id is None:
        return None
    found = await store.conversation_of_task(parent_id)
    if found is None:
        return None
    conversation, worker = found
    if worker == slot:
        await store.activate_conversation(conversation)
        return Opened(conversation, parent_id)
    fresh = await store.new_conversation(slot, task.user_id)
    turns = await store.load_turns(conversation)
    if turns:
        await store.append_turns(fresh, turns, None)
    context = ""
    if agent:
        parent = await store.get_task(parent_id)
        context = carried_context(parent) if parent is not None else ""
    return Opened(fresh, parent_id, carried_from=worker, context=context)


def carried_context(parent: Task) -> str:
    """The earlier task as text, for a workspace that has not seen its session."""
    answer = (parent.result or "").strip() or "(no answer recorded)"
    text = (f"Earlier in this conversation (task {parent.id}):\n"
            f"User: {parent.prompt.strip()}\nAssistant: {answer}")
    if len(text) > CONTEXT_CHARS:
        text = text[: CONTEXT_CHARS - 1] + "…"
    return text + "\n\nNow, continuing:\n"


async def link_reply(
    store: Store, chat_id: int, replied_to: int | None, task_id: str, *, made_in: str,
    user_id: int,
) -> Task | None:
    """A prompt written as a reply in a worker chat: link the task about to be created (the
    worker's own pin keeps it there) to the task replied to. Returns that task, if any."""
    if replied_to is None:
        return None
    parent = await parent_of_reply(store, chat_id, replied_to, made_in=made_in, user_id=user_id)
    if parent is not None:
        await store.link_follow_up(task_id, parent.id)
    return parent


def merged_note(parent: Task, *, files: int = 0, raised_to: str | None = None) -> str:
    """`raised_to`: the priority the reply gave the task (e.g. "priority 1 (urgent)")."""
    what = ("your reply was added to its prompt" if not files else
            f"your reply and its {'file was' if files == 1 else f'{files} files were'} added "
            "to it")
    raised = f"; it now has {raised_to}" if raised_to else ""
    return f"✏️ {parent.id} has not started yet: {what}, so it answers both{raised}."


async def resolve_follow_up(
    store: Store, parent: Task, states: Mapping[str, WorkerState], prompt: str,
    *, files: Sequence[Attachment] = (), priority: int | None = None,
) -> Plan:
    """The plan for a reply to `parent`; a merge into the pending parent is done here (and
    reported as `Plan.merge`), the reply's `files` included. A parent claimed meanwhile is
    planned again as running (the caller then stores the files with the new task)."""
    added = False
    for _ in range(2):
        found = await store.conversation_of_task(parent.id)
        plan = plan_follow_up(parent, found[1] if found else None, states)
        if not plan.merge:
            return plan
        if files and not added:
            # Before the prompt: a worker that claims the parent once its prompt names the
            # reply finds the files too. (Lost to a claim in between, they are extra files
            # of the parent's run; the follow-up gets its own copy.)
            await store.add_attachments(parent.id, files)
            added = True
        merged = merged_prompt(parent.prompt, prompt)
        if await store.update_pending_prompt(parent.id, merged, parent.title,
                                             priority=priority) is not None:
            return plan
        parent = await store.get_task(parent.id) or parent.with_(state=TaskState.FAILED)
    return Plan(note=f"{parent.id} is starting: the next free worker runs this after it.")
