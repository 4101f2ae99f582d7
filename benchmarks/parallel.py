"""Benchmark: wall time of N tasks on one worker versus N workers, and claim throughput.

Runs the real fleet (`Fleet`, as `fleetgram up` does) against the emulated Telegram and Claude
over HTTP, so the figures include the whole path: master receipt, claim, streaming edits,
completion notice. Ratios matter, not absolute numbers (shared, noisy machines).

    .venv/bin/python benchmarks/parallel.py [--tasks 3] [--tokens-per-second 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Appended, not prepended: the repo's operator/ folder must not shadow the stdlib module.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from fleetgram.domain import Task, TaskState
from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import TelegramEmulator
from fleetgram.store import open_store
from tests.e2e.harness import ADA, World, add_bots


async def run_fleet(tasks: int, workers: int, tps: float, db: str) -> float:
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=tps)
    await telegram.start()
    await claude.start()
    add_bots(telegram)
    world = World(telegram, claude, db, telegram.add_user(ADA, "Ada"), telegram.add_user(2, "B"))
    try:
        async with world.fleet(MIN_WORKERS=workers, MAX_WORKERS=workers) as fleet:
            await world.open_chats(world.ada)
            while len([s for s in await fleet.store.get_slots() if s.ready_at]) < workers:
                await asyncio.sleep(0.05)
            started = time.monotonic()
            ids = [await world.prompt(f"benchmark task number {i}") for i in range(tasks)]
            while True:
                done = [await fleet.store.get_task(i) for i in ids]
                if all(t is not None and t.state == TaskState.COMPLETED for t in done):
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
    finally:
        await claude.stop()
        await telegram.stop()


async def claim_throughput(db_url: str, n: int = 300, claimers: int = 8) -> float:
    stores = [open_store(db_url) for _ in range(claimers)]
    for s in stores:
        await s.open()
    base = datetime.now(UTC)
    for i in range(n):
        await stores[0].create_task(Task(id=f"t-b{i:04d}", user_id=1, chat_id=1, prompt="p",
                                         title="p", created_at=base + timedelta(microseconds=i)))
    started = time.monotonic()

    async def drain(store):  # type: ignore[no-untyped-def]
        count = 0
        while await store.claim_next("worker1", datetime.now(UTC)) is not None:
            count += 1
        return count

    counts = await asyncio.gather(*(drain(s) for s in stores))
    elapsed = time.monotonic() - started
    assert sum(counts) == n
    for s in stores:
        await s.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    parser.add_argument("--postgres", action="store_true",
                        help="also measure claims on a throwaway database of the local server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = await run_fleet(args.tasks, 1, args.tokens_per_second,
                              f"sqlite:///{tmp}/one.sqlite3")
        many = await run_fleet(args.tasks, args.tasks, args.tokens_per_second,
                               f"sqlite:///{tmp}/many.sqlite3")
        print(f"{args.tasks} tasks on 1 worker:  {one:6.2f} s")
        print(f"{args.tasks} tasks on {args.tasks} workers: {many:6.2f} s")
        print(f"speed-up: {one / many:.2f}x (ideal {args.tasks}x)")
        rate = await claim_throughput(f"sqlite:///{tmp}/claims.sqlite3")
        print(f"claims/s, SQLite, 8 concurrent claimers:   {rate:8.0f}")
    if args.postgres:
        from tests.pg import fresh_pg_database

        async with fresh_pg_database("fg_bench") as url:
            rate = await claim_throughput(url)
        print(f"claims/s, Postgres, 8 concurrent claimers: {rate:8.0f}")


if __name__ == "__main__":
    asyncio.run(main())
