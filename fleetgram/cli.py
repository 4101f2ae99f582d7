"""`fleetgram` command line: up | master | worker | operator | check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from fleetgram import logs, metrics
from fleetgram.config import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetgram", description=__doc__)
    parser.add_argument("--env-file", default=".env", help="read settings from this file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run master, orchestrator and workers in one process")
    sub.add_parser("master", help="run the master bot only (workers elsewhere, shared DB)")
    worker = sub.add_parser("worker", help="run one worker bot")
    worker.add_argument("--slot", help="worker slot, e.g. worker2 (default: $WORKER_SLOT)")
    sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    sub.add_parser("check", help="validate the configuration and exit")
    return parser


async def _serve(component: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await component.start()
    try:
        await stop.wait()
    finally:
        await component.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    need_master = args.command in ("up", "master", "check")
    need_workers = args.command in ("up", "worker", "check")
    try:
        settings: Settings = load_settings(
            dotenv=Path(args.env_file), need_master=need_master, need_workers=need_workers
        )
    except ConfigError as exc:
        print(f"fleetgram: configuration error: {exc}", file=sys.stderr)
        return 2
    secrets = (settings.master_bot_token, settings.anthropic_api_key, *settings.worker_token_pool)
    logs.configure(settings.log_level, secrets)
    metrics.serve(settings.metrics_port)

    if args.command == "check":
        print(f"configuration OK: {len(settings.worker_token_pool)} worker tokens, "
              f"database {settings.database_url.split('@')[-1]}")
        return 0
    if args.command == "operator":
        from fleetgram.operator.main import run_operator

        return run_operator(settings)

    from fleetgram.fleet import Fleet, MasterOnly, WorkerOnly

    component: Any
    if args.command == "up":
        component = Fleet(settings)
    elif args.command == "master":
        component = MasterOnly(settings)
    else:
        import os

        slot = args.slot or os.environ.get("WORKER_SLOT", "")
        # On Kubernetes a worker holds one token (WORKER_TOKEN) and knows only its own slot.
        known = settings.worker_token is not None and slot.startswith("worker") and \
            slot.removeprefix("worker").isdigit()
        if slot not in settings.slot_names and not known:
            print(f"fleetgram: configuration error: WORKER_SLOT: {slot!r} is not one of "
                  f"{', '.join(settings.slot_names)}", file=sys.stderr)
            return 2
        component = WorkerOnly(settings, slot)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(component))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
