"""A start that cannot succeed fails fast: one line naming the cause and the setting to fix,
never a token, a non-zero exit within 10 s (real `fleetgram` child processes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fleetgram.checks import TELEGRAM_TIMEOUT
from tests.e2e.harness import MASTER_TOKEN, World, fleet_env, worker_token
from tests.e2e.test_cli import SECRET_ENV, closed_port

pytestmark = pytest.mark.e2e

START_FAILS_WITHIN = 10.0
BAD_MASTER_TOKEN = "1999:TYPO-master-token-qwerty"


class Failed:
    def __init__(self, code: int, seconds: float, stderr: str, ended: float = 0.0) -> None:
        self.code, self.seconds, self.stderr = code, seconds, stderr
        self.ended = ended  # time.monotonic() when the process had exited

    @property
    def lines_for_people(self) -> list[str]:
        """stderr without the structured (JSON) log lines."""
        out = []
        for line in self.stderr.splitlines():
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                out.append(line)
        return out


async def start_and_wait(tmp_path: Path, env: dict[str, str], *args: str) -> Failed:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    clean = {k: v for k, v in os.environ.items()
             if k not in SECRET_ENV and not k.startswith(("ANTHROPIC", "CLAUDE"))}
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgram.cli", *args, cwd=tmp_path, env=clean,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    ended = time.monotonic()
    return Failed(proc.returncode, ended - began, err.decode(), ended)


def assert_failed_fast_with_one_line(result: Failed, setting: str, *secrets: str,
                                     timed: bool = True) -> str:
    assert result.code not in (0, None), result.stderr
    if timed:
        assert result.seconds < START_FAILS_WITHIN, f"took {result.seconds:.1f}s"
    assert "Traceback" not in result.stderr
    lines = result.lines_for_people
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fleetgram: cannot start: {setting}: "), lines[0]
    for secret in secrets:
        assert secret not in result.stderr
    return lines[0]


async def test_a_master_token_telegram_refuses_fails_in_one_line_without_the_token(
    world: World, tmp_path: Path
) -> None:
    env = fleet_env(world.telegram, world.claude, world.database_url, 2,
                    MASTER_BOT_TOKEN=BAD_MASTER_TOKEN)
    result = await start_and_wait(tmp_path, env, "up")
    line = assert_failed_fast_with_one_line(
        result, "MASTER_BOT_TOKEN", BAD_MASTER_TOKEN, "TYPO-master", worker_token(1)
    )
    assert "refused the token" in line


async def test_an_unreachable_telegram_api_url_fails_in_one_line(
    world: World, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    env = fleet_env(world.telegram, world.claude, world.database_url, 2, TELEGRAM_API_URL=url)
    result = await start_and_wait(tmp_path, env, "up")
    line = assert_failed_fast_with_one_line(result, "TELEGRAM_API_URL", MASTER_TOKEN)
    assert f"cannot reach Telegram at {url}" in line


async def test_an_unreachable_postgres_fails_in_one_line_without_its_password(
    world: World, tmp_path: Path
) -> None:
    url = f"postgresql://fleet:pw-s3cret@127.0.0.1:{closed_port()}/fleet"
    env = fleet_env(world.telegram, world.claude, url, 2)
    result = await start_and_wait(tmp_path, env, "up")
    line = assert_failed_fast_with_one_line(result, "DATABASE_URL", "pw-s3cret", MASTER_TOKEN)
    assert "Connection refused" in line


async def test_a_worker_whose_token_telegram_refuses_names_its_slot(
    world: World, tmp_path: Path
) -> None:
    bad = "2999:TYPO-worker-token-qwerty"
    env = fleet_env(world.telegram, world.claude, world.database_url, 2,
                    WORKER_TOKEN_POOL=f"{worker_token(1)},{bad}")
    result = await start_and_wait(tmp_path, env, "worker", "--slot", "worker2")
    line = assert_failed_fast_with_one_line(
        result, "WORKER_TOKEN_POOL (entry 2)", bad, "TYPO-worker"
    )
    assert "worker2: Telegram refused the token" in line


class SilentServer:
    """Accepts connections and never answers: a Telegram that does not respond."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.first_connection_at: float | None = None  # time.monotonic()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            if self.first_connection_at is None:
                self.first_connection_at = time.monotonic()
            self.connected.set()

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()


async def test_a_telegram_that_never_answers_fails_the_start_in_one_line(
    world: World, tmp_path: Path
) -> None:
    silent = SilentServer()
    async with silent as url:
        env = fleet_env(world.telegram, world.claude, world.database_url, 2, TELEGRAM_API_URL=url)
        result = await start_and_wait(tmp_path, env, "up")
    # Timed from its first request, not from the process start, whose imports a loaded
    # machine slows: it gives up one Telegram timeout after asking (and says so in a line).
    line = assert_failed_fast_with_one_line(result, "TELEGRAM_API_URL", MASTER_TOKEN,
                                            timed=False)
    assert silent.first_connection_at is not None
    waited = result.ended - silent.first_connection_at
    assert waited < TELEGRAM_TIMEOUT + 2.0, f"gave up {waited:.1f}s after its first request"
    assert f"no answer from Telegram at {url}" in line


async def test_sigterm_while_starting_stops_within_5s_with_exit_0(
    world: World, tmp_path: Path
) -> None:
    telegram = SilentServer()
    async with telegram as url:
        env = fleet_env(world.telegram, world.claude, world.database_url, 2, TELEGRAM_API_URL=url)
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetgram.cli", "up", cwd=tmp_path, env=clean,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            # The child is starting: its master's getMe is waiting for an answer.
            await asyncio.wait_for(telegram.connected.wait(), 20)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 15)
            took = time.monotonic() - began
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert took < 5.0, f"stopping took {took:.1f}s"
    assert "Traceback" not in err.decode()
