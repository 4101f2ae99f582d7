"""fleetgram's benchmark suite: one command, one table, one JSON file.

    .venv/bin/python -P benchmarks/run.py            # the full suite (4-5 minutes)
    .venv/bin/python -P benchmarks/run.py --quick    # a small run (about 30 s)
    .venv/bin/python -P benchmarks/run.py --postgres postgresql://user@host/db

The real fleet (`python -m fleetgram.cli up`, in a process of its own) and a single-bot
baseline answer prompts against the project's Telegram and Claude emulators, which run in this
process. Every figure is measured from the outside (see benchmarks/README.md); the goals are
those of issue 10. Nothing is asserted: figures that miss their goal say so in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

# The harness sits next to this file; appended, not prepended (python -P), so that nothing
# in the repository shadows a stdlib or installed module.
sys.path.append(str(Path(__file__).resolve().parent))

from harness import (
    DRAFT,
    MASTER,
    MASTER_TOKEN,
    SENDS,
    SINGLE,
    SINGLE_TOKEN,
    BotProcess,
    Emulated,
    Watcher,
    base_env,
    emulated,
    fleet_process,
    per_second,
    percentile,
    prompt_text,
    single_bot_process,
    stop_all,
    to_ada,
    wait_for,
    wait_polling,
    worker_bot,
)

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
OPERATOR_SCRIPT = Path(__file__).resolve().parent / "operator_idle.py"
START_TIMEOUT = 60.0  # six processes importing at once on a busy laptop take a while
_T = TypeVar("_T")


@dataclass(frozen=True)
class Plan:
    """The workload. The full plan is issue 10's; --quick shrinks every count."""

    tasks: int = 20  # the table's prompts
    stream_seconds: float = 2.0  # how long each of their answers streams
    tokens_per_second: float = 50.0  # the emulated Claude's pace
    fleets: tuple[int, ...] = (1, 2, 3, 5)
    latency_samples: int = 20  # prompts sent one at a time to idle workers
    short_tokens: int = 10  # answers of the latency and load phases (0.2 s at 50 tok/s)
    long_stream_seconds: float = 20.0  # the stream whose calls per second are counted
    rss_tasks: int = 400  # tasks the 5-worker process has run when its RSS is read again
    receipts: int = 1000  # prompts queued at once
    operator_window: float = 10.0  # seconds of idle operator observed (scaled to a minute)

    @property
    def answer_tokens(self) -> int:
        return round(self.stream_seconds * self.tokens_per_second)


QUICK = Plan(tasks=3, stream_seconds=0.5, latency_samples=4, long_stream_seconds=3.0,
             rss_tasks=30, receipts=100, operator_window=5.0)


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    goal: str = "—"
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return self.note or "n/a"
        if self.unit == "×":
            return f"{self.value:.2f}×"
        if self.unit == "s":
            return f"{self.value:.1f} s"
        if self.unit == "ms":
            return f"{self.value:.0f} ms"
        if self.unit == "MB":
            return f"{self.value:.1f} MB"
        return f"{self.value:.{0 if self.value >= 100 else 2}f} {self.unit}".rstrip()


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float | None, unit: str, goal: str = "—",
            check: Callable[[float], bool] | None = None, note: str = "") -> None:
        met = None if value is None or check is None else bool(check(value))
        self.figures.append(Figure(name, value, unit, goal, met, note))


# ----------------------------------------------------------------------------- running bots
class Keys:
    """Prompt keys q0001, q0002, ... unique within one emulator session."""

    def __init__(self) -> None:
        self._next = 1

    def take(self, n: int) -> list[str]:
        keys = [f"q{i:04d}" for i in range(self._next, self._next + n)]
        self._next += n
        return keys


async def send_all(world: Emulated, watcher: Watcher, bot: str, keys: list[str],
                   tokens: int) -> float:
    """Ada sends every prompt at once (as fast as she can type them); returns the first time."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    for key in keys:
        world.answer_tokens[key] = tokens
        watcher.sent(key, loop.time())
        await world.ada.send(bot, prompt_text(key))
    return first


async def answered(watcher: Watcher, keys: list[str], within: float,
                   processes: list[BotProcess]) -> float:
    """Wait until every answer's final text reached Telegram; the time of the last one."""
    await wait_for(lambda: watcher.done(keys), within, f"{len(keys)} answers", processes)
    return max(watcher.stages[k].final_text or 0.0 for k in keys)


@contextlib.asynccontextmanager
async def running(processes: list[BotProcess], world: Emulated,
                  bots: list[str]) -> AsyncIterator[None]:
    for process in processes:
        process.start()
    try:
        await wait_polling(world, bots, START_TIMEOUT, processes)
        yield
    except Exception:
        for process in processes:  # what the bots said, to tell why
            tail = process.log.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                print(f"--- last lines of {process.name}'s log:", *tail, sep="\n",
                      file=sys.stderr)
        raise
    finally:
        await stop_all(processes)


async def open_chats(world: Emulated, workers: int) -> None:
    """Ada pressed Start in every worker's chat earlier, and presses it in the master's now."""
    for n in range(1, workers + 1):
        world.ada.opened_earlier(worker_bot(n))
    await world.ada.start(MASTER)
    await wait_for(lambda: any(c.token == MASTER_TOKEN and to_ada(c) and c.status == 200
                               for c in world.telegram.calls), 10, "the master's welcome")


# ----------------------------------------------------------------------------- phases
async def baseline(plan: Plan, workdir: Path, keys: Keys) -> float:
    """The single bot answers the table's prompts one after another; the wall time."""
    async with emulated(plan.tokens_per_second) as world:
        env = base_env(world, f"sqlite:///{workdir / 'single.sqlite3'}", 1)
        env["SINGLE_BOT_TOKEN"] = SINGLE_TOKEN
        bot = single_bot_process(env, workdir)
        async with running([bot], world, [SINGLE]):
            world.ada.opened_earlier(SINGLE)
            watcher = Watcher(world, [SINGLE])
            batch = keys.take(plan.tasks)
            started = await send_all(world, watcher, SINGLE, batch, plan.answer_tokens)
            ended = await answered(watcher, batch, plan.tasks * (plan.stream_seconds + 2) + 30,
                                   [bot])
            return ended - started


@dataclass
class FleetRun:
    wall: float
    first_text_ms: list[float]
    final_text_ms: list[float]


def stream_latencies(world: Emulated, watcher: Watcher,
                     keys: list[str]) -> tuple[list[float], list[float]]:
    """Per answer: Claude's first text token to the first text in Telegram, and its last
    token to the final text (ms)."""
    streams = world.tap.by_key()
    first, final = [], []
    for key in keys:
        stage, stream = watcher.stages[key], streams.get(key)
        if stream is None or stream.first_text is None or stream.last_text is None:
            continue
        if stage.first_text is not None:
            first.append((stage.first_text - stream.first_text) * 1000)
        if stage.final_text is not None:
            final.append((stage.final_text - stream.last_text) * 1000)
    return first, final


async def table_run(world: Emulated, watcher: Watcher, plan: Plan, keys: Keys,
                    processes: list[BotProcess]) -> FleetRun:
    batch = keys.take(plan.tasks)
    started = await send_all(world, watcher, MASTER, batch, plan.answer_tokens)
    ended = await answered(watcher, batch, plan.tasks * (plan.stream_seconds + 2) + 30, processes)
    return FleetRun(ended - started, *stream_latencies(world, watcher, batch))


async def fleet(plan: Plan, workdir: Path, workers: int, keys: Keys) -> FleetRun:
    """A fresh `fleetgram up` with `workers` workers (SQLite) answers the table's prompts."""
    async with emulated(plan.tokens_per_second) as world:
        env = base_env(world, f"sqlite:///{workdir / f'fleet{workers}.sqlite3'}", workers)
        process = fleet_process(env, workdir, name=f"fleet{workers}")
        bots = [MASTER, *(worker_bot(n) for n in range(1, workers + 1))]
        async with running([process], world, bots):
            await open_chats(world, workers)
            watcher = Watcher(world, bots[1:])
            return await table_run(world, watcher, plan, keys, [process])


async def one_at_a_time(world: Emulated, watcher: Watcher, plan: Plan, keys: Keys,
                        processes: list[BotProcess]) -> list[str]:
    """Prompts sent one by one, each once the previous answer is done and the workers have
    gone back to waiting: the message-to-first-message path of an idle fleet."""
    batch = keys.take(plan.latency_samples)
    for key in batch:
        await send_all(world, watcher, MASTER, [key], plan.short_tokens)
        await answered(watcher, [key], 30, processes)
        await asyncio.sleep(0.3)
    return batch


def calls_per_second(world: Emulated, watcher: Watcher, key: str) -> dict[str, float]:
    """The most calls in any 1 s window in the chat that streamed `key`'s answer, while it
    streamed: sendMessage/editMessageText, sendMessageDraft, and every call."""
    stage = watcher.stages[key]
    assert stage.first_message is not None and stage.final_text is not None
    calls = [c for c in world.telegram.calls
             if c.token == stage.bot and to_ada(c) and c.method.lower() != "getupdates"
             and stage.first_message <= c.at <= stage.final_text]
    return {
        "messages": per_second([c.at for c in calls if c.method.lower() in SENDS]),
        "drafts": per_second([c.at for c in calls if c.method.lower() == DRAFT]),
        "all": per_second([c.at for c in calls]),
        "stream_seconds": stage.final_text - stage.first_message,
    }


async def receipts_rate(world: Emulated, watcher: Watcher, plan: Plan, keys: Keys,
                        processes: list[BotProcess]) -> float:
    """Prompts queued at once; receipts per second until the last receipt. The emulator's
    per-bot limit (Telegram allows a bot about 30 messages/s) is lifted: the master's own
    pace, whatever the bot's client-side limiter lets through."""
    world.telegram.chat_burst = world.telegram.bot_rate = 1_000_000
    world.telegram.chat_rate = 1_000_000.0
    batch = keys.take(plan.receipts)
    started = await send_all(world, watcher, MASTER, batch, plan.short_tokens)
    await wait_for(lambda: watcher.receipts(batch) == len(batch), 120,
                   f"{len(batch)} receipts", processes)
    last = max(watcher.stages[k].receipt or 0.0 for k in batch)
    return len(batch) / (last - started)


async def five_workers(plan: Plan, workdir: Path, keys: Keys, results: Results) -> FleetRun:
    """One `fleetgram up` with 5 workers: RSS at idle, the table's prompts, latencies, a long
    stream, RSS after `rss_tasks` tasks, receipts for queued prompts."""
    async with emulated(plan.tokens_per_second) as world:
        env = base_env(world, f"sqlite:///{workdir / 'fleet5.sqlite3'}", 5)
        process = fleet_process(env, workdir, name="fleet5")
        bots = [MASTER, *(worker_bot(n) for n in range(1, 6))]
        async with running([process], world, bots):
            await open_chats(world, 5)
            await asyncio.sleep(1.0)  # start-up settles (imports done, first polls made)
            rss_idle, pss_idle = process.rss_mb(), process.pss_mb()
            watcher = Watcher(world, bots[1:])
            run = await table_run(world, watcher, plan, keys, [process])

            long_key = keys.take(1)[0]
            long_tokens = round(plan.long_stream_seconds * plan.tokens_per_second)
            await send_all(world, watcher, MASTER, [long_key], long_tokens)
            latency_keys = await one_at_a_time(world, watcher, plan, keys, [process])
            await answered(watcher, [long_key], plan.long_stream_seconds * 3 + 30, [process])
            rates = calls_per_second(world, watcher, long_key)

            # The rest of the tasks as one batch (Telegram's limits lifted: this is memory).
            world.telegram.chat_burst = world.telegram.bot_rate = 1_000_000
            world.telegram.chat_rate = 1_000_000.0
            done = len(watcher.stages)
            rest = keys.take(max(0, plan.rss_tasks - done))
            await send_all(world, watcher, MASTER, rest, plan.short_tokens)
            await answered(watcher, rest, 30 + len(rest) * 1.5, [process])
            await asyncio.sleep(1.0)
            rss_after, pss_after = process.rss_mb(), process.pss_mb()
            tasks_run = len(watcher.stages)
            rate = await receipts_rate(world, watcher, plan, keys, [process])

    stages = [watcher.stages[k] for k in latency_keys]
    to_receipt = [(s.receipt - s.sent) * 1000 for s in stages if s.receipt]
    to_first = [(s.first_message - s.sent) * 1000 for s in stages if s.first_message]
    results.raw["five_workers"] = {
        "rss_idle_mb": rss_idle, "rss_after_mb": rss_after, "tasks_run": tasks_run,
        "pss_idle_mb": pss_idle, "pss_after_mb": pss_after,
        "message_to_receipt_ms": to_receipt, "message_to_first_message_ms": to_first,
        "long_stream": rates, "receipts_per_second": rate,
    }
    return run


async def on_postgres(plan: Plan, workdir: Path, keys: Keys, admin_url: str,
                      results: Results) -> None:
    """`fleetgram master` and 5 `fleetgram worker` processes sharing a fresh Postgres
    database: the table's prompts, and message-to-first-message one prompt at a time."""
    url = await create_database(admin_url)
    try:
        async with emulated(plan.tokens_per_second) as world:
            env = base_env(world, url, 5)
            processes = [fleet_process(env, workdir, "master", "pg-master")]
            processes += [fleet_process(env, workdir, "worker", f"pg-worker{n}",
                                        ["--slot", f"worker{n}"]) for n in range(1, 6)]
            bots = [MASTER, *(worker_bot(n) for n in range(1, 6))]
            async with running(processes, world, bots):
                await open_chats(world, 5)
                watcher = Watcher(world, bots[1:])
                run = await table_run(world, watcher, plan, keys, processes)
                latency_keys = await one_at_a_time(world, watcher, plan, keys, processes)
    finally:
        await drop_database(admin_url, url)
    stages = [watcher.stages[k] for k in latency_keys]
    results.raw["postgres"] = {
        "wall": run.wall, "first_text_ms": run.first_text_ms, "final_text_ms": run.final_text_ms,
        "message_to_first_message_ms": [(s.first_message - s.sent) * 1000
                                        for s in stages if s.first_message],
    }


async def create_database(admin_url: str) -> str:
    import psycopg

    name = f"fg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with contextlib.suppress(Exception):
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def operator_requests(plan: Plan, quick: bool, postgres: str | None,
                            workdir: Path) -> tuple[float | None, str]:
    """The operator's API requests per idle minute, or why it was not measured. Runs
    benchmarks/operator_idle.py (it needs the test extra and a Postgres server: --postgres,
    else $FLEETGRAM_TEST_PG_ADMIN_URL or the local server as the tests find it)."""
    if quick:
        return None, "skipped in --quick"
    admin = postgres or os.environ.get("FLEETGRAM_TEST_PG_ADMIN_URL") or DEFAULT_PG_ADMIN
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(admin, connect_timeout=3):
            pass
    except Exception:
        return None, "needs Postgres (--postgres URL)"
    with (workdir / "operator.log").open("wb") as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-P", str(OPERATOR_SCRIPT), str(plan.operator_window), admin,
            stdout=asyncio.subprocess.PIPE, stderr=log, cwd=workdir)
        try:
            out, _ = await asyncio.wait_for(child.communicate(), plan.operator_window + 90)
        except TimeoutError:
            child.kill()
            await child.wait()
            return None, "not measured: timed out"
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"not measured: exit {child.returncode}"
    return answer["value"], answer["note"]


# ----------------------------------------------------------------------------- the report
def summarise(plan: Plan, results: Results, base: float | None,
              runs: dict[int, FleetRun | None], operator: tuple[float | None, str]) -> None:
    """The figures, in the table's order; a phase that failed leaves its rows without value
    (the note says why)."""
    add, errors = results.add, results.raw.setdefault("errors", {})

    def failed(phase: str) -> str:
        return f"failed: {errors.get(phase, 'not run')}"

    add(f"single bot: {plan.tasks} tasks × {plan.stream_seconds:g} s stream", base, "s",
        note="" if base is not None else failed("single bot"))
    for workers, run in runs.items():
        label = f"fleet, {workers} worker{'s' if workers > 1 else ''}: speedup"
        goal, check = {1: ("≥ 0.95×", lambda v: v >= 0.95),
                       5: ("≥ 4.75×", lambda v: v >= 4.75)}.get(
            workers, (f"— (ideal {workers}×)", None))
        if run is None or base is None:
            add(label, None, "×", goal, note=failed(f"fleet of {workers}"))
        else:
            add(label, base / run.wall, "×", goal, check, f"wall {run.wall:.1f} s")

    five = results.raw.get("five_workers")
    for name in ("message → receipt", "message → first worker message"):
        values = five[_RAW_LATENCY[name]] if five else []
        for q in (50, 99):
            add(f"{name} p{q}", percentile(values, q) if values else None, "ms",
                note="" if values else failed("fleet of 5"))
    first = [v for run in runs.values() if run for v in run.first_text_ms]
    final = [v for run in runs.values() if run for v in run.final_text_ms]
    for name, values, goal in (("Claude first token → first visible text", first, 150),
                               ("Claude last token → final text", final, 300)):
        for q in (50, 99):
            judged = q == 50 or goal == 300  # issue 10: first text p50; final text always
            add(f"{name} p{q}", percentile(values, q) if values else None, "ms",
                f"≤ {goal} ms" if judged else "—",
                (lambda v, g=goal: v <= g) if judged else None,
                "" if values else "failed: no answer measured")
    rates = five["long_stream"] if five else {}
    note = "" if five else failed("fleet of 5")
    add(f"calls/s in one chat, {plan.long_stream_seconds:g} s stream: send+edit (max 1 s)",
        rates.get("messages"), "/s", "≤ 1", lambda v: v <= 1, note)
    add("  … sendMessageDraft (max 1 s)", rates.get("drafts"), "/s", "— (no documented limit)",
        note=note)
    add("  … all calls (max 1 s)", rates.get("all"), "/s", note=note)
    tasks_run = five["tasks_run"] if five else plan.rss_tasks
    for when, rss, pss in (("idle", "rss_idle_mb", "pss_idle_mb"),
                           (f"after {tasks_run} tasks", "rss_after_mb", "pss_after_mb")):
        value = five[rss] if five else None
        shared = five[pss] if five else None
        add(f"RSS of `fleetgram up`, 5 workers, {when}", value, "MB", "≤ 150 MB",
            lambda v: v <= 150, note or ("" if shared is None else f"PSS {shared:.0f} MB"))
    add(f"receipts/s, {plan.receipts} prompts queued at once",
        five["receipts_per_second"] if five else None, "/s", "— (Telegram: ~30/s per bot)",
        note=note)
    if "postgres" in results.raw or "Postgres" in errors:
        pg = results.raw.get("postgres")
        note = "" if pg else failed("Postgres")
        wall = pg["wall"] if pg else None
        add("Postgres, master + 5 worker processes: speedup",
            base / wall if wall and base else None, "×", "≥ 4.75×", lambda v: v >= 4.75,
            f"wall {wall:.1f} s" if wall else note)
        values = pg["message_to_first_message_ms"] if pg else []
        for q in (50, 99):
            add(f"Postgres: message → first worker message p{q}",
                percentile(values, q) if values else None, "ms", note=note)
    value, how = operator
    add("operator API requests per idle minute", value, "", "≤ 6 (1 per 10 s)",
        lambda v: v <= 6, how)


_RAW_LATENCY = {"message → receipt": "message_to_receipt_ms",
                "message → first worker message": "message_to_first_message_ms"}


def print_table(results: Results) -> None:
    rows = [("figure", "value", "goal", "met?")]
    for f in results.figures:
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        value = f.shown() + (f"  ({f.note})" if f.note and f.value is not None else "")
        rows.append((f.name, value, f.goal, met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        # Other work on the machine skews every figure: the 1-minute load when the run ended.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


_STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


async def attempt(results: Results, phase: str, work: Awaitable[_T]) -> _T | None:
    """Run one phase; a failure is noted (and shown in the table), the suite goes on."""
    progress(phase)
    try:
        return await work
    except Exception as error:
        progress(f"{phase} failed: {type(error).__name__}: {error}")
        results.raw.setdefault("errors", {})[phase] = f"{type(error).__name__}"
        return None


async def suite(plan: Plan, quick: bool, postgres: str | None) -> Results:
    results = Results()
    keys = Keys()
    with tempfile.TemporaryDirectory(prefix="fleetgram-bench-") as tmp:
        workdir = Path(tmp)
        base = await attempt(results, "single bot", baseline(plan, workdir, keys))
        runs: dict[int, FleetRun | None] = {}
        for workers in sorted(plan.fleets):
            phase = f"fleet of {workers}"
            if workers == 5:  # also: idle RSS, latencies, a long stream, load, receipts
                runs[5] = await attempt(results, phase, five_workers(plan, workdir, keys,
                                                                     results))
            else:
                runs[workers] = await attempt(results, phase, fleet(plan, workdir, workers,
                                                                    keys))
        if postgres:
            await attempt(results, "Postgres", on_postgres(plan, workdir, keys, postgres,
                                                           results))
        operator = await attempt(results, "operator, idle",
                                 operator_requests(plan, quick, postgres, workdir))
        progress("done")
    results.raw["table"] = {"single": base,
                            **{str(w): r and asdict(r) for w, r in runs.items()}}
    summarise(plan, results, base, runs, operator or (None, "failed"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (about 30 s)")
    parser.add_argument("--postgres", metavar="URL",
                        help="also run master + 5 worker processes on a throwaway database "
                             "created through URL (a database the user may CREATE DATABASE "
                             "from); the operator figure needs it too")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help=f"where to write the results (default: {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    started = time.monotonic()
    results = asyncio.run(suite(plan, args.quick, args.postgres))
    elapsed = time.monotonic() - started
    print_table(results)
    info = machine()
    print(f"\n{info['cores']} cores, Python {info['python']}, {info['platform']}, load "
          f"{info['load_average_1min']}; {'quick' if args.quick else 'full'} run in "
          f"{elapsed:.0f} s")
    report = {
        "machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick, "seconds": round(elapsed, 1), "plan": asdict(plan),
        "figures": [asdict(f) for f in results.figures], "raw": results.raw,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=_finite) + "\n")
    print(f"results: {args.json}")
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    raise SystemExit(main())
