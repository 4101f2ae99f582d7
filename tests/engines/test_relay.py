"""The agent relay: the CLI runs in the relay's container, piped over a socket; the worker
side never holds the process, and a worker that goes away takes the CLI with it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.engines.relay import (
    EXIT,
    START,
    STDIN,
    STDIN_CLOSED,
    Relay,
    RelayError,
    frame,
    parse_address,
    pipe_through_relay,
    read_frame,
)

FAKE_CLI = """#!{python}
import os, sys, time
print("args=" + " ".join(sys.argv[1:]), flush=True)
print("env=" + ",".join(sorted(os.environ)), flush=True)
print("cwd=" + os.getcwd(), flush=True)
if "--sleep" in sys.argv:
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(os.environ["CLAUDE_CODE_PIDFILE"], "w").write(str(child.pid))
    time.sleep(60)
for line in sys.stdin:
    print("echo:" + line.strip(), flush=True)
sys.exit(3)
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    path = tmp_path / "claude"
    path.write_text(FAKE_CLI.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
async def relay(fake_cli: Path) -> AsyncIterator[tuple[Relay, str]]:
    relay = Relay(str(fake_cli))
    server = await relay.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield relay, f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def run(address: str, args: list[str], env: dict[str, str], cwd: str,
              stdin_data: bytes = b"", terminated: asyncio.Event | None = None
              ) -> tuple[int, bytes]:
    stdin = asyncio.StreamReader()
    stdin.feed_data(stdin_data)
    stdin.feed_eof()
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    status = await pipe_through_relay(
        address, args, env, cwd, stdin=stdin, write_stdout=write, write_stderr=write,
        terminated=terminated or asyncio.Event())
    return status, b"".join(out)


async def test_the_cli_gets_the_arguments_the_input_and_gives_back_output_and_status(
        relay: tuple[Relay, str], tmp_path: Path) -> None:
    _, address = relay
    status, out = await run(address, ["--print", "x"], {"PATH": os.environ["PATH"]},
                            str(tmp_path), b"one\ntwo\n")
    text = out.decode()
    assert status == 3
    assert "args=--print x" in text and f"cwd={tmp_path}" in text
    assert "echo:one" in text and "echo:two" in text


async def test_the_cli_sees_only_the_kept_environment(relay: tuple[Relay, str],
                                                      tmp_path: Path) -> None:
    _, address = relay
    _, out = await run(address, [], {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                     "MASTER_BOT_TOKEN": "1:m", "DATABASE_URL": "postgres://"},
                       str(tmp_path))
    env_line = next(line for line in out.decode().splitlines() if line.startswith("env="))
    assert "MASTER_BOT_TOKEN" not in env_line and "DATABASE_URL" not in env_line
    assert "HOME" in env_line


async def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_launcher_that_goes_away_takes_the_cli_and_its_commands_with_it(
        relay: tuple[Relay, str], tmp_path: Path) -> None:
    instance, address = relay
    pidfile = tmp_path / "child.pid"
    host, port = parse_address(address)
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(frame(START, json.dumps({
        "args": ["--sleep"], "cwd": str(tmp_path),
        "env": {"PATH": os.environ["PATH"], "CLAUDE_CODE_PIDFILE": str(pidfile)}}).encode()))
    await writer.drain()
    assert await _wait(lambda: _exists(pidfile))
    child = int(pidfile.read_text())
    writer.close()  # the worker died: no terminate frame, the connection just ends
    assert await _wait(lambda: _gone(child)), "the command outlived its worker"
    assert await _wait(lambda: _none_running(instance))


async def _exists(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


async def _gone(pid: int) -> bool:
    return not await _pid_alive(pid)


async def _none_running(relay: Relay) -> bool:
    return relay.running == 0


async def test_a_terminate_frame_stops_the_cli_and_reports_its_status(
        relay: tuple[Relay, str], tmp_path: Path) -> None:
    _, address = relay
    terminated = asyncio.Event()
    pidfile = tmp_path / "child.pid"
    stdin = asyncio.StreamReader()  # never ends: only the terminate frame can stop it
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    running = asyncio.create_task(pipe_through_relay(
        address, ["--sleep"], {"PATH": os.environ["PATH"], "CLAUDE_CODE_PIDFILE": str(pidfile)},
        str(tmp_path), stdin=stdin, write_stdout=write, write_stderr=write,
        terminated=terminated))
    assert await _wait(lambda: _exists(pidfile))
    terminated.set()
    status = await asyncio.wait_for(running, 5)
    assert status < 0  # ended by a signal
    assert await _wait(lambda: _gone(int(pidfile.read_text())))


async def test_an_unreachable_relay_is_one_readable_line() -> None:
    with pytest.raises(RelayError, match="not reachable"):
        await run("127.0.0.1:9", [], {}, "/")


async def test_a_connection_that_does_not_start_properly_is_closed(
        relay: tuple[Relay, str]) -> None:
    instance, address = relay
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(frame(STDIN, b"hello"))
    await writer.drain()
    assert await read_frame(reader) is None
    assert instance.started == 0
    writer.close()


def test_frames_round_trip() -> None:
    async def check() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(frame(STDIN_CLOSED) + frame(EXIT, b"0"))
        reader.feed_eof()
        assert await read_frame(reader) == (STDIN_CLOSED, b"")
        assert await read_frame(reader) == (EXIT, b"0")
        assert await read_frame(reader) is None

    asyncio.run(check())


def test_an_address_must_be_host_and_port() -> None:
    assert parse_address("127.0.0.1:7777") == ("127.0.0.1", 7777)
    with pytest.raises(ValueError):
        parse_address("7777")
