"""Soak run: the real fleet against emulated Telegram and Claude while both misbehave.

Three workers and one user (Ada, who opened every chat). N prompts go to the master over some
seconds while a seeded schedule injects the faults the real services produce: 502 bursts and
429 storms on the master and the workers, lost replies and malformed answers on sendMessage /
editMessageText, Claude 529s, hung requests, trickling, stalled and mid-stream-failing streams,
and the store refusing writes (a full disk) for 2-3 s. Then the chaos stops and the run waits
(bounded) until every task is finished, and counts what the user got:

- receipts: "🆕 t-xxxxx" in the master chat (one per task; more are duplicates);
- completed / failed (with "t-xxxxx failed:" in the master chat, or without) / cancelled /
  stuck (still not finished) / lost (no task in the store for a prompt; the master may have
  said "could not save that prompt", counted apart);
- doubled: a task whose answer Claude streamed to the end more than once, or whose
  "✅ t-xxxxx done" (worker chats) or "t-xxxxx done by" (master chat) shows more than once,
  or two tasks made from one message;
- the faults scheduled, and how many calls each actually hit.

Asserts nothing: it prints figures. The same seed gives the same schedule on every store.

    .venv/bin/python benchmarks/chaos.py [--postgres] [--tasks 40] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Appended, not prepended: the repo's operator/ folder must not shadow the stdlib module.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from fleetgram.domain import Task, TaskState
from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import TelegramEmulator
from fleetgram.fleet import Fleet
from fleetgram.store import open_store
from tests.e2e.harness import ADA, MALLORY, MASTER, World, add_bots, worker_bot, worker_token
from tests.faults import FaultyStore

WORKERS = 3
# The fleet's settings for the soak (on top of the harness's fast polls): small Claude limits
# so a stalled or hung call ends in seconds; a lease long enough that a store outage of a few
# seconds does not by itself make the safety net requeue a healthy task; intake limits high
# enough that the soak's own pace is never refused.
SETTINGS: dict[str, str] = {
    "MIN_WORKERS": str(WORKERS),
    "MAX_WORKERS": str(WORKERS),
    "CLAUDE_TIMEOUT": "8",
    "CLAUDE_STALL_TIMEOUT": "3",
    "WORKER_LEASE_SECONDS": "15",
    "PROMPTS_PER_MINUTE": "1000",
    "MAX_PENDING_PER_USER": "1000",
}
PROMPT_MARK = re.compile(r"chaos prompt (\d{4})")
NOT_QUEUED_TEXT = "could not save that prompt"
RECEIPT = re.compile(r"🆕 (t-[a-z0-9]{5})")
DONE_BY = re.compile(r"\b(t-[a-z0-9]{5}) done by\b")
FAILED = re.compile(r"\b(t-[a-z0-9]{5}) failed:")
DONE_IN_WORKER_CHAT = re.compile(r"✅ (t-[a-z0-9]{5}) done\b")

# Which prompt the stream running in this context answers (see CountingClaude).
_streaming_prompt: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "streaming_prompt", default=None
)


def prompt_text(index: int) -> str:
    return f"chaos prompt {index:04d}: name three uses of a paperclip"


class CountingClaude(ClaudeEmulator):
    """The Claude emulator, also counting per prompt the streams that reached message_stop
    (a task whose answer was streamed to the end twice ran twice)."""

    def __init__(self, **kwargs: Any) -> None:
        self.completed_by_prompt: Counter[int] = Counter()
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def completed_streams(self) -> int:
        return self._completed

    @completed_streams.setter
    def completed_streams(self, value: int) -> None:
        # The emulator adds one right after writing message_stop, inside _stream: the context
        # variable set below says for which prompt.
        prompt = _streaming_prompt.get()
        if value > getattr(self, "_completed", 0) and prompt is not None:
            self.completed_by_prompt[prompt] += 1
        self._completed = value

    async def _stream(self, request: Any, request_id: str, message: dict[str, Any],
                      output: Any, usage: Any, fault: Any = None) -> Any:
        # The default answer starts "Answer to: <the last user text>", which holds the mark.
        found = PROMPT_MARK.search("".join(output.text_tokens))
        token = _streaming_prompt.set(int(found.group(1)) if found else None)
        try:
            return await super()._stream(request, request_id, message, output, usage, fault)
        finally:
            _streaming_prompt.reset(token)


# ----------------------------------------------------------------------------- the schedule
@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the first prompt
    kind: str
    bot: str = ""
    method: str = ""
    seconds: float = 0.0
    count: int = 1
    processed: bool = False
    tokens: int = 0


FAULT_KINDS: dict[str, int] = {  # kind -> weight in the draw
    "telegram 502 burst": 3,
    "telegram 429 storm": 3,
    "telegram lost reply": 3,
    "telegram malformed answer": 3,
    "claude 529": 2,
    "claude hang": 1,
    "claude trickle": 1,
    "claude stall": 1,
    "claude mid-stream error": 1,
}
STORE_OUTAGE = "store refuses writes"


def draw_schedule(rng: random.Random, chaos_seconds: float, rate: float,
                  store_outages: int) -> list[Fault]:
    bots = [MASTER] + [worker_bot(n) for n in range(1, WORKERS + 1)]
    kinds, weights = list(FAULT_KINDS), list(FAULT_KINDS.values())
    faults: list[Fault] = []
    at = rng.expovariate(rate)
    while at < chaos_seconds:
        kind = rng.choices(kinds, weights)[0]
        bot = rng.choice(bots)
        method = rng.choice(["sendMessage", "editMessageText"])
        match kind:
            case "telegram 502 burst":
                fault = Fault(at, kind, bot=bot, seconds=rng.uniform(1.0, 3.0))
            case "telegram 429 storm":
                fault = Fault(at, kind, bot=bot, seconds=rng.uniform(1.0, 4.0))
            case "telegram lost reply":
                fault = Fault(at, kind, bot=bot, method=method)
            case "telegram malformed answer":
                fault = Fault(at, kind, bot=bot, method=method, processed=rng.random() < 0.5)
            case "claude 529":
                fault = Fault(at, kind, count=rng.randint(1, 2))
            case "claude trickle":
                fault = Fault(at, kind, tokens=rng.randint(0, 8))
            case "claude stall" | "claude mid-stream error":
                fault = Fault(at, kind, tokens=rng.randint(1, 20))
            case _:
                fault = Fault(at, kind)
        faults.append(fault)
        at += rng.expovariate(rate)
    for _ in range(store_outages):
        faults.append(Fault(rng.uniform(0.0, chaos_seconds), STORE_OUTAGE,
                            seconds=rng.uniform(2.0, 3.0)))
    return sorted(faults, key=lambda f: f.at)


def inject(fault: Fault, telegram: TelegramEmulator, claude: ClaudeEmulator,
           store: FaultyStore) -> None:
    match fault.kind:
        case "telegram 502 burst":
            telegram.fail_for(fault.bot, fault.seconds)
        case "telegram 429 storm":
            telegram.flood(fault.bot, fault.seconds)
        case "telegram lost reply":
            telegram.lose_reply_next(fault.bot, fault.method)
        case "telegram malformed answer":
            telegram.malformed_next(fault.bot, fault.method, processed=fault.processed)
        case "claude 529":
            claude.inject(529, count=fault.count)
        case "claude hang":
            claude.hang_next()
        case "claude trickle":
            claude.trickle_next(ping_every=0.5, text_tokens=fault.tokens)
        case "claude stall":
            claude.stall_next(after_tokens=fault.tokens)
        case "claude mid-stream error":
            claude.error_midstream_next(after_tokens=fault.tokens)
        case "store refuses writes":
            store.refuse_writes(fault.seconds)
        case other:
            raise ValueError(other)


# ----------------------------------------------------------------------------- the run
@dataclass
class Figures:
    store: str
    submitted: int = 0
    receipts: int = 0
    duplicate_receipts: int = 0
    tasks: int = 0
    completed: int = 0
    failed_noticed: int = 0
    failed_silent: int = 0
    cancelled: int = 0
    stuck: list[str] = field(default_factory=list)
    lost: int = 0
    not_queued_notices: int = 0
    doubled: dict[str, list[str]] = field(default_factory=dict)
    stale_placeholders: int = 0
    stale_tasks: list[str] = field(default_factory=list)
    stale_shown: dict[str, list[str]] = field(default_factory=dict)  # its worker-chat texts
    stale_calls: dict[str, list[str]] = field(default_factory=dict)  # faults its sends met
    not_queued_sends: Counter[str] = field(default_factory=Counter)
    done_notices_master: int = 0
    done_notices_workers: int = 0
    claude_runs_to_the_end: int = 0
    attempts: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    scheduled: Counter[str] = field(default_factory=Counter)
    hits: dict[str, int] = field(default_factory=dict)
    claude_faults_unplayed: int = 0
    settle_seconds: float = 0.0
    wall: float = 0.0
    logged: Counter[str] = field(default_factory=Counter)


class LogCounter(logging.Handler):
    """Counts the fleet's log records by level (the figures say how noisy a soak is)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1


async def wait_for(predicate: Callable[[], Any], within: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(poll)
    return False


async def soak(label: str, database_url: str, args: argparse.Namespace,
               schedule: list[Fault], send_at: list[float], logs: LogCounter) -> Figures:
    figures = Figures(label)
    logs.counts.clear()
    started = time.monotonic()
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = CountingClaude(api_key="sk-ant-test-key-0001",
                            tokens_per_second=args.tokens_per_second)
    await telegram.start()
    await claude.start()
    add_bots(telegram, WORKERS)
    world = World(telegram, claude, database_url, telegram.add_user(ADA, "Ada", "ada"),
                  telegram.add_user(MALLORY, "Mallory", "mallory"))
    settings = world.settings(workers=WORKERS, **SETTINGS)
    store = FaultyStore(open_store(settings.database_url))
    fleet = Fleet(settings, store=store)  # type: ignore[arg-type]
    try:
        await fleet.start()
        await world.open_chats(world.ada, workers=WORKERS)

        async def all_ready() -> bool:
            return len([s for s in await fleet.store.get_slots() if s.ready_at]) >= WORKERS

        await wait_for(all_ready, 30)
        origin = time.monotonic()

        async def run_chaos() -> None:
            for fault in schedule:
                await asyncio.sleep(max(0.0, origin + fault.at - time.monotonic()))
                inject(fault, telegram, claude, store)
                figures.scheduled[fault.kind] += 1

        async def submit() -> list[int]:
            message_ids = []
            for index, at in enumerate(send_at):
                await asyncio.sleep(max(0.0, origin + at - time.monotonic()))
                message_ids.append(await world.ada.send(MASTER, prompt_text(index)))
            return message_ids

        chaos = asyncio.create_task(run_chaos())
        message_ids = await submit()
        figures.submitted = len(message_ids)
        await chaos
        settle_started = time.monotonic()

        async def ours() -> list[Task]:
            tasks = await fleet.store.list_tasks(user_id=ADA, limit=10 * len(message_ids) + 100)
            return [t for t in tasks if t.message_id in set(message_ids)]

        quiet_since: list[float] = []

        async def settled() -> bool:
            # Every task finished, the master has read every update and the outbox is empty,
            # and it stayed so for a moment (a handler may still be storing the last prompt).
            tasks = await ours()
            calm = (all(t.state.finished for t in tasks)
                    and not telegram.pending_updates(MASTER)
                    and not await fleet.store.pending_events())
            if not calm:
                quiet_since.clear()
                return False
            if not quiet_since:
                quiet_since.append(time.monotonic())
            return time.monotonic() - quiet_since[0] >= 2.0

        await wait_for(settled, args.settle_timeout, poll=0.25)
        figures.settle_seconds = time.monotonic() - settle_started
        tasks = await ours()
        count(figures, world, claude, tasks, message_ids)
        figures.hits = hits(telegram, claude, store)
        figures.claude_faults_unplayed = len(claude._faults)
    finally:
        await fleet.stop()
        await claude.stop()
        await telegram.stop()
    figures.wall = time.monotonic() - started
    figures.logged = Counter(logs.counts)
    return figures


def count(figures: Figures, world: World, claude: CountingClaude, tasks: list[Task],
          message_ids: list[int]) -> None:
    master = world.ada.bot_texts(MASTER)
    workers = [text for n in range(1, WORKERS + 1) for text in world.ada.bot_texts(worker_bot(n))]
    receipts = Counter(m.group(1) for text in master for m in RECEIPT.finditer(text))
    done_by = Counter(m.group(1) for text in master for m in DONE_BY.finditer(text))
    failed_notices = Counter(m.group(1) for text in master for m in FAILED.finditer(text))
    done_in_workers = Counter(m.group(1) for text in workers
                              for m in DONE_IN_WORKER_CHAT.finditer(text))
    figures.not_queued_notices = sum(NOT_QUEUED_TEXT in text for text in master)
    stale = [text for text in workers if text.endswith("\n…")]
    figures.stale_placeholders = len(stale)
    states = {t.id: t.state.value for t in tasks}
    for text in stale:
        found = re.match(r"(t-[a-z0-9]{5})", text)
        task_id = found.group(1) if found else "?"
        figures.stale_tasks.append(f"{task_id} ({states.get(task_id, 'not ours')})")
        figures.stale_shown[task_id] = [t for t in workers if task_id in t]
        figures.stale_calls[task_id] = [
            f"{c.method} {c.fault or c.status}" for n in range(1, WORKERS + 1)
            for c in world.telegram.calls if c.token == worker_token(n)
            and task_id in str(c.params.get("text", "")) and c.fault  # the faulty ones
        ]
    # What became of the master's "could not save that prompt" answers (a lost prompt whose
    # answer never showed is lost silently).
    for call in world.telegram.calls_to(MASTER, "sendMessage"):
        if NOT_QUEUED_TEXT in str(call.params.get("text", "")):
            figures.not_queued_sends[call.fault or str(call.status)] += 1
    figures.done_notices_master = sum(done_by.values())
    figures.done_notices_workers = sum(done_in_workers.values())
    figures.claude_runs_to_the_end = sum(claude.completed_by_prompt.values())

    by_message: dict[int, list[Task]] = collections.defaultdict(list)
    for task in tasks:
        assert task.message_id is not None
        by_message[task.message_id].append(task)
    figures.tasks = len(tasks)
    figures.lost = sum(1 for mid in message_ids if not by_message.get(mid))
    figures.receipts = sum(1 for t in tasks if receipts[t.id])
    figures.duplicate_receipts = sum(max(0, receipts[t.id] - 1) for t in tasks)
    doubled: dict[str, list[str]] = collections.defaultdict(list)
    index_of = {mid: index for index, mid in enumerate(message_ids)}
    for made in by_message.values():
        if len(made) > 1:
            for task in made:
                doubled[task.id].append(f"one of {len(made)} tasks of one message")
    for task in tasks:
        figures.attempts[task.attempts] += 1
        match task.state:
            case TaskState.COMPLETED:
                figures.completed += 1
            case TaskState.FAILED:
                if failed_notices[task.id]:
                    figures.failed_noticed += 1
                else:
                    figures.failed_silent += 1
                figures.errors[str(task.error)] += 1
            case TaskState.CANCELLED:
                figures.cancelled += 1
            case _:
                figures.stuck.append(f"{task.id} {task.state.value} on {task.worker}")
        runs = claude.completed_by_prompt[index_of[task.message_id or 0]]
        if runs > 1 and len(by_message[task.message_id or 0]) == 1:
            doubled[task.id].append(f"Claude answered it to the end {runs} times")
        if done_in_workers[task.id] > 1:
            doubled[task.id].append(f"'✅ {task.id} done' {done_in_workers[task.id]}x")
        if done_by[task.id] > 1:
            doubled[task.id].append(f"'{task.id} done by' {done_by[task.id]}x")
    figures.doubled = dict(doubled)


def hits(telegram: TelegramEmulator, claude: ClaudeEmulator,
         store: FaultyStore) -> dict[str, int]:
    """How many calls each kind of fault actually hit."""
    faults = Counter(c.fault for c in telegram.calls if c.fault)
    return {
        "Telegram calls refused by a 502 burst": faults["outage"],
        "Telegram calls refused by a 429 storm": faults["flood"],
        "Telegram replies lost": faults["lost_reply"],
        "Telegram answers malformed": faults["malformed"],
        "Claude streams ended by an error event": claude.errored_streams,
        "Claude streams cut by the client": claude.cancelled_streams,
        "Claude streams completed": claude.completed_streams,
        "store writes refused": len(store.refused),
    }


def report(f: Figures) -> None:
    print(f"\n== {f.store} ==")
    print(f"wall time                         {f.wall:7.1f} s "
          f"(after the chaos, {f.settle_seconds:.1f} s to settle)")
    print(f"tasks submitted                   {f.submitted:5d}")
    print(f"tasks in the store                {f.tasks:5d}")
    print(f"receipts seen                     {f.receipts:5d}   duplicates {f.duplicate_receipts}")
    print(f"completed                         {f.completed:5d}")
    print(f"failed, notice in master chat     {f.failed_noticed:5d}")
    print(f"failed, no notice                 {f.failed_silent:5d}")
    print(f"cancelled                         {f.cancelled:5d}")
    print(f"stuck (not finished)              {len(f.stuck):5d}")
    print(f"lost (no task for a prompt)       {f.lost:5d}   "
          f"'could not save that prompt' notices: {f.not_queued_notices}")
    if f.not_queued_sends:
        print("  their sends, by outcome (HTTP status or fault): "
              + ", ".join(f"{k}: {n}" for k, n in sorted(f.not_queued_sends.items())))
    print(f"doubled                           {len(f.doubled):5d}")
    print(f"stale '…' placeholders            {f.stale_placeholders:5d}"
          + (f"   {', '.join(f.stale_tasks)}" if f.stale_tasks else ""))
    for task_id, shown in f.stale_shown.items():
        for text in shown:
            short = text if len(text) < 90 else text[:40] + " … " + text[-45:]
            print(f"  {task_id} in a worker chat: {short!r}")
        print(f"  {task_id}: faults its sends and edits met: "
              + (", ".join(f.stale_calls.get(task_id, [])) or "none"))
    print(f"'done' notices: master chat {f.done_notices_master}, worker chats "
          f"{f.done_notices_workers}; Claude answers streamed to the end "
          f"{f.claude_runs_to_the_end}")
    print("attempts per task                 "
          + ", ".join(f"{n}: {c}" for n, c in sorted(f.attempts.items())))
    for task_id, why in sorted(f.doubled.items()):
        print(f"  doubled {task_id}: {'; '.join(why)}")
    for stuck in f.stuck:
        print(f"  stuck {stuck}")
    for error, n in f.errors.most_common():
        print(f"  failed x{n}: {error}")
    print("faults injected:")
    for kind in [*FAULT_KINDS, STORE_OUTAGE]:
        print(f"  {kind:<32} {f.scheduled[kind]:5d}")
    print(f"  {'(Claude faults never played)':<32} {f.claude_faults_unplayed:5d}")
    print("what they hit:")
    for what, n in f.hits.items():
        print(f"  {what:<40} {n:5d}")
    print("log records: " + (", ".join(f"{lvl} {n}" for lvl, n in sorted(f.logged.items()))
                             or "none at WARNING or above"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40, help="prompts to submit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--submit-seconds", type=float, default=20.0,
                        help="the prompts are sent over this many seconds")
    parser.add_argument("--chaos-seconds", type=float, default=25.0,
                        help="faults are injected during this many seconds")
    parser.add_argument("--fault-rate", type=float, default=1.2, help="faults per second")
    parser.add_argument("--store-outages", type=int, default=2,
                        help="times the store refuses writes (2-3 s each)")
    parser.add_argument("--tokens-per-second", type=float, default=80.0)
    parser.add_argument("--settle-timeout", type=float, default=120.0,
                        help="how long to wait, after the chaos, for every task to finish")
    parser.add_argument("--postgres", action="store_true",
                        help="also run on a throwaway database of the local Postgres")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--verbose", action="store_true", help="show the fleet's logs")
    args = parser.parse_args()

    logs = LogCounter()
    if args.verbose:
        logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger().addHandler(logs)

    rng = random.Random(args.seed)
    schedule = draw_schedule(rng, args.chaos_seconds, args.fault_rate, args.store_outages)
    send_at = sorted(rng.uniform(0.0, args.submit_seconds) for _ in range(args.tasks))
    print(f"seed {args.seed}: {args.tasks} prompts over {args.submit_seconds:g} s, "
          f"{len(schedule)} faults over {args.chaos_seconds:g} s, {WORKERS} workers")

    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(await soak("SQLite", f"sqlite:///{tmp}/chaos.sqlite3", args,
                                      schedule, send_at, logs))
            report(results[-1])
    if args.postgres:
        from tests.pg import fresh_pg_database

        async with fresh_pg_database("fg_chaos") as url:
            results.append(await soak("Postgres", url, args, schedule, send_at, logs))
            report(results[-1])


if __name__ == "__main__":
    asyncio.run(main())
