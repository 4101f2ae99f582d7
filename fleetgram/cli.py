"""`fleetgram` command line: up | master | worker | operator | check | uninstall-fleet | demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fleetgram import logs, metrics
from fleetgram.config import ConfigError, ConfigErrors, Settings, load_settings, read_env

log = logging.getLogger("fleetgram")

DEFAULT_ENV_FILE = ".env"
# After a stop was asked for, the process ends by then whatever is still running (a thread
# stuck in a blocking call keeps Python from exiting): SIGTERM/Ctrl-C end it within 5 s.
HARD_EXIT_AFTER = 4.7


def _parser() -> argparse.ArgumentParser:
    # --env-file is accepted before or after the subcommand: the subcommands' copy leaves the
    # attribute alone unless it is given (SUPPRESS), so neither overrides the other's value.
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument("--env-file", default=argparse.SUPPRESS,
                          help=f"read settings from this file (default: {DEFAULT_ENV_FILE}, "
                               "which may be absent)")
    parser = argparse.ArgumentParser(prog="fleetgram", description=__doc__)
    parser.add_argument("--env-file", default=None,
                        help=f"read settings from this file (default: {DEFAULT_ENV_FILE}, "
                             "which may be absent)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", parents=[env_file],
                   help="run master, orchestrator and workers in one process")
    sub.add_parser("master", parents=[env_file],
                   help="run the master bot only (workers elsewhere, shared DB)")
    worker = sub.add_parser("worker", parents=[env_file], help="run one worker bot")
    worker.add_argument("--slot", help="worker slot, e.g. worker2 (default: $WORKER_SLOT)")
    sub.add_parser("operator", parents=[env_file], help="run the Kubernetes operator (kopf)")
    relay = sub.add_parser(
        "agent-relay", help="run Claude Code for the agent workers that connect here (the "
                            "pod's agent container on Kubernetes; it needs no settings)")
    relay.add_argument("--listen", default="127.0.0.1:7777", help="host:port to listen on")
    relay.add_argument("--cli", default=None,
                       help="the Claude Code binary (default: the one bundled with the SDK)")
    from fleetgram import uninstall

    uninstall.add_arguments(sub.add_parser(
        "uninstall-fleet", help="delete the WorkerPool and wait for its workers to go (the "
                                "chart's pre-delete hook; needs only the API server)"))
    demo = sub.add_parser(
        "demo", help="see it work without any token: the fleet against emulated Telegram "
                     "(and Claude, unless ANTHROPIC_API_KEY is set) on a local web page")
    demo.add_argument("--host", default="127.0.0.1", help="address of the page "
                                                          "(default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="port of the page (default: 8080)")
    demo.add_argument("--workers", type=int, default=3, choices=range(1, 10), metavar="N",
                      help="worker bots, 1-9 (default: 3)")
    check = sub.add_parser(
        "check", parents=[env_file],
        help="validate the configuration, reach the database, and exit (0 when all is well)",
    )
    check.add_argument("--online", action="store_true",
                       help="also call getMe for every bot token and the Claude API once")
    return parser


def _configuration_errors(exc: ConfigError) -> int:
    errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    for error in errors:
        print(f"fleetgram: configuration error: {error}", file=sys.stderr)
    return 2


def _hard_exit_later(code: int) -> None:
    def hard_exit() -> None:
        log.warning("shutdown overran; exiting now", extra={"seconds": HARD_EXIT_AFTER})
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(code)

    timer = threading.Timer(HARD_EXIT_AFTER, hard_exit)
    timer.daemon = True
    timer.start()


async def _serve(component: Any, health: Any = None) -> None:
    """Start, run until SIGINT/SIGTERM, stop. A signal during start-up stops it too.
    `health` (fleetgram.health.Health) watches this loop and, once started, the component's
    checks; it is ready from then until the stop begins."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if health is not None:
        health.attach(loop)

    def request_stop() -> None:
        if not stop.is_set():
            _hard_exit_later(0)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, request_stop)
    starting = asyncio.create_task(component.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # asked to stop while starting: start cleans up after itself
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return
    stopping.cancel()
    starting.result()  # a failed start raises here (it has already stopped what it started)
    if health is not None:
        health.add_checks(component.health_checks())
        health.set_ready(True)
    try:
        await stop.wait()
    finally:
        if health is not None:
            health.set_ready(False)
        await component.stop()


def _one_line(exc: BaseException, secrets: tuple[str, ...]) -> str:
    text = str(exc).strip().splitlines()
    return logs.redact(f"{type(exc).__name__}: {text[0] if text else ''}", secrets)


def _run(component: Any, secrets: tuple[str, ...], health: Any = None) -> int:
    from fleetgram.checks import StartupError

    try:
        asyncio.run(_serve(component, health))
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:
        print(f"fleetgram: cannot start: {logs.redact(str(exc), secrets)}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.debug("start-up failed", exc_info=exc)
        print(f"fleetgram: cannot start: {_one_line(exc, secrets)}", file=sys.stderr)
        return 1
    return 0


def _check(settings: Settings, online: bool) -> int:
    from fleetgram.checks import run_checks

    print(f"configuration OK: {len(settings.worker_token_pool)} worker tokens, "
          f"MIN_WORKERS={settings.min_workers}, MAX_WORKERS={settings.max_workers}")
    secrets = _secrets(settings)
    try:
        results = asyncio.run(run_checks(settings, online=online))
    except Exception as exc:  # a check that broke is a problem to report, not a traceback
        log.debug("fleetgram check failed", exc_info=exc)
        print(f"problem: the checks themselves failed: {_one_line(exc, secrets)}",
              file=sys.stderr)
        return 1
    problems = 0
    for result in results:
        line = logs.redact(result.line, secrets)
        if result.ok:
            print(f"ok: {line}")
        else:
            problems += 1
            print(f"problem: {line}", file=sys.stderr)
    checked = "configuration, database" + (", Telegram tokens and Claude" if online else "")
    if problems:
        print(f"fleetgram check: {problems} problem{'s' if problems > 1 else ''} "
              f"({checked} checked)", file=sys.stderr)
        return 1
    print(f"fleetgram check: all good ({checked} checked)")
    return 0


def _secrets(settings: Settings) -> tuple[str, ...]:
    return tuple(s for s in (settings.master_bot_token, settings.anthropic_api_key,
                             settings.claude_code_oauth_token or "",
                             settings.worker_token or "", *settings.worker_token_pool) if s)


def needs(command: str) -> dict[str, bool]:
    """What a command requires of the configuration (load_settings' need_* flags). Only the
    workers call Claude (`check --online` tests the key too): the master and the operator
    start without ANTHROPIC_API_KEY, and the operator without any bot token."""
    return {"need_master": command in ("up", "master", "check"),
            "need_workers": command in ("up", "worker", "check"),
            "need_claude": command in ("up", "worker", "check")}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent-relay":  # no settings: this container holds no secrets
        return _agent_relay(args.listen, args.cli)
    if args.command == "uninstall-fleet":  # no settings: only the API server
        from fleetgram import uninstall

        return uninstall.main(args)
    if args.command == "demo":  # no settings: the demo makes its own (no .env is read)
        return _demo(args.host, args.port, args.workers)
    explicit = args.env_file is not None
    try:
        env = read_env(Path(args.env_file or DEFAULT_ENV_FILE), required=explicit)
        settings: Settings = load_settings(env, **needs(args.command))
    except ConfigError as exc:
        return _configuration_errors(exc)
    secrets = _secrets(settings)
    logs.configure(settings.log_level, secrets)

    if args.command == "check":
        return _check(settings, args.online)
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:
        print(f"fleetgram: cannot start: METRICS_PORT: cannot listen on port "
              f"{settings.metrics_port} ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 1
    if args.command == "operator":
        from fleetgram.operator.main import run_operator

        port = settings.health_port  # kopf's liveness endpoint (0: none)
        problem = _cannot_listen(port) if port else None
        if problem is not None:
            # kopf would log it and stop the operator; like the master and the workers, run
            # without the endpoint instead (its probes then fail, visibly).
            log.warning("HEALTH_PORT: cannot listen on port %s (%s); /healthz is off",
                        port, problem)
        return run_operator(settings, liveness=problem is None)

    from fleetgram.fleet import Fleet, MasterOnly

    component: Any
    try:
        if args.command == "up":
            component = Fleet(settings)
        elif args.command == "master":
            component = MasterOnly(settings)
        else:
            component = _worker(settings, env.get("WORKER_SLOT", ""), args.slot)
    except ConfigError as exc:
        return _configuration_errors(exc)
    except Exception as exc:
        log.debug("building the fleet failed", exc_info=exc)
        print(f"fleetgram: cannot start: {_one_line(exc, secrets)}", file=sys.stderr)
        return 1
    return _run(component, secrets, _health(settings.health_port))


def _cannot_listen(port: int) -> str | None:
    """Why `port` cannot be listened on (all interfaces), or None when it can."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            return exc.strerror or type(exc).__name__
    return None


def _health(port: int) -> Any:
    """The /healthz and /readyz server on HEALTH_PORT (None when 0). A port that cannot be
    had is reported and the component runs without it (its probes then fail, visibly)."""
    if not port:
        return None
    from fleetgram.health import Health

    health = Health()
    try:
        health.serve(port)
    except OSError as exc:
        log.warning("HEALTH_PORT: cannot listen on port %s (%s); /healthz and /readyz are off",
                    port, exc.strerror or type(exc).__name__)
        return None
    return health


def _demo(host: str, port: int, workers: int) -> int:
    from fleetgram.demo.run import demo_from_environment

    demo = demo_from_environment(host, port, workers)
    # Quiet by default (the page is the show); LOG_LEVEL=INFO or DEBUG to see the fleet work.
    level = os.environ.get("LOG_LEVEL", "").strip().upper()
    logs.configure(level if level in ("DEBUG", "INFO", "ERROR") else "WARNING",
                   demo.world.log_secrets)
    return _run(demo, demo.world.log_secrets)


def _agent_relay(address: str, cli: str | None) -> int:
    import asyncio
    import contextlib

    from fleetgram.engines.launcher import bundled_cli
    from fleetgram.engines.relay import parse_address, run_relay

    logs.configure("INFO", ())
    try:
        parse_address(address)
    except ValueError as exc:
        print(f"fleetgram: agent-relay: --listen: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_relay(address, cli or str(bundled_cli())))
    return 0


async def _with_stored_tokens(settings: Settings) -> None:
    """The worker tokens added with /addworker (stored encrypted) join the pool."""
    from fleetgram.store import open_store
    from fleetgram.tokens import load_into_pool

    store = open_store(settings.database_url)
    await store.open()
    try:
        await load_into_pool(settings, store)
    finally:
        await store.close()


def _worker(settings: Settings, env_slot: str, arg_slot: str | None) -> Any:
    from fleetgram.fleet import WorkerOnly

    slot = arg_slot or env_slot
    # On Kubernetes a worker holds one token (WORKER_TOKEN) and knows only its own slot.
    known = settings.worker_token is not None and slot.startswith("worker") and \
        slot.removeprefix("worker").isdigit()
    if slot not in settings.slot_names and not known:
        asyncio.run(_with_stored_tokens(settings))  # a slot added with /addworker
    if slot not in settings.slot_names and not known:
        raise ConfigError("WORKER_SLOT", f"{slot!r} is not one of "
                                         f"{', '.join(settings.slot_names)}")
    return WorkerOnly(settings, slot)


if __name__ == "__main__":
    raise SystemExit(main())
