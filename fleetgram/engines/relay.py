"""The agent relay: the Claude Code CLI started in another container, piped over a socket.

On Kubernetes the worker container holds the bot token and the ServiceAccount token; the
agent's commands must reach neither. So an agent pool's pod has a second container, `agent`,
with neither, running `fleetgram agent-relay --listen 127.0.0.1:7777`. The worker (with
AGENT_RELAY set) starts its launcher as usual (fleetgram.engines.launcher); the launcher
connects here, and the CLI, and every command it runs, live in the agent container.

Wire format, both directions: frames of a 1-byte kind, a 4-byte big-endian length, the payload.
- client -> relay: `h` the start (JSON: args, env, cwd), `i` stdin bytes, `c` stdin closed,
  `k` terminate (the launcher got SIGTERM). A connection that ends without `k` after the
  process started also ends the process: the worker is gone.
- relay -> client: `o` stdout bytes, `e` stderr bytes, `x` the exit status (decimal text).
The relay starts only its own CLI (the `args` are the CLI's arguments, never a program), with
the environment reduced as the launcher reduces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from fleetgram.engines.launcher import kept_environment

log = logging.getLogger(__name__)

HEADER = struct.Struct(">cI")
MAX_FRAME = 16 * 1024 * 1024
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the CLI's process group
START, STDIN, STDIN_CLOSED, TERMINATE = b"h", b"i", b"c", b"k"
STDOUT, STDERR, EXIT = b"o", b"e", b"x"


class RelayError(Exception):
    """The relay could not be reached or broke the protocol (one line for the task)."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as partial:
        if partial.partial:
            raise RelayError("a frame was cut short") from None
        return None
    kind, size = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise RelayError(f"a frame of {size} bytes is over the limit")
    try:
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise RelayError("a frame was cut short") from None


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


# ----------------------------------------------------------------------------- the relay
class Relay:
    """Serves launchers: one CLI process per connection."""

    def __init__(self, cli: str) -> None:
        self.cli = cli
        self.running = 0  # CLI processes alive now
        self.started = 0  # CLI processes started in all

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._connection, host, port)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            first = await read_frame(reader)
            if first is None or first[0] != START:
                raise RelayError("the connection did not start with a start frame")
            start = json.loads(first[1])
            await self._run(start, reader, writer)
        except (RelayError, ValueError, OSError) as error:
            log.warning("agent relay connection failed", extra={"error": str(error)[:200]})
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _run(self, start: dict[str, Any], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        args = [str(a) for a in start.get("args", [])]
        env = kept_environment({str(k): str(v) for k, v in dict(start.get("env", {})).items()})
        process = await asyncio.create_subprocess_exec(
            self.cli, *args, cwd=start.get("cwd") or None, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.running += 1
        self.started += 1
        try:
            pumps = [
                asyncio.create_task(_pump_out(process.stdout, STDOUT, writer)),
                asyncio.create_task(_pump_out(process.stderr, STDERR, writer)),
            ]
            feeding = asyncio.create_task(self._feed(reader, process))
            status = await process.wait()
            await asyncio.gather(*pumps, return_exceptions=True)
            feeding.cancel()
            with contextlib.suppress(OSError):
                writer.write(frame(EXIT, str(status).encode()))
                await writer.drain()
        finally:
            self.running -= 1
            await _end(process)

    async def _feed(self, reader: asyncio.StreamReader,
                    process: asyncio.subprocess.Process) -> None:
        """The launcher's frames into the CLI; its end (or `k`) ends the CLI."""
        assert process.stdin is not None
        try:
            while True:
                got = await read_frame(reader)
                if got is None or got[0] == TERMINATE:
                    break
                kind, payload = got
                if kind == STDIN:
                    process.stdin.write(payload)
                    await process.stdin.drain()
                elif kind == STDIN_CLOSED:
                    process.stdin.close()
        except (RelayError, OSError) as error:
            log.info("the launcher went away", extra={"error": str(error)[:200]})
        await _end(process)


async def _pump_out(stream: asyncio.StreamReader | None, kind: bytes,
                    writer: asyncio.StreamWriter) -> None:
    assert stream is not None
    while chunk := await stream.read(65536):
        writer.write(frame(kind, chunk))
        await writer.drain()


async def _end(process: asyncio.subprocess.Process) -> None:
    """Stop the CLI and everything it started (its own process group)."""
    if process.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), wait)
            return


async def run_relay(address: str, cli: str, *, ready: Callable[[], None] = lambda: None
                    ) -> None:
    host, port = parse_address(address)
    server = await Relay(cli).serve(host, port)
    log.info("agent relay listening", extra={"address": address})
    ready()
    async with server:
        await server.serve_forever()


# ----------------------------------------------------------------------------- the launcher side
async def pipe_through_relay(
    address: str, args: list[str], env: dict[str, str], cwd: str,
    *, stdin: asyncio.StreamReader, write_stdout: Callable[[bytes], Awaitable[None]],
    write_stderr: Callable[[bytes], Awaitable[None]], terminated: asyncio.Event,
) -> int:
    """Run the CLI through the relay at `address`; its exit status."""
    host, port = parse_address(address)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        raise RelayError(f"the agent relay at {address} is not reachable: "
                         f"{error.strerror or error}") from None
    writer.write(frame(START, json.dumps({"args": args, "env": env, "cwd": cwd}).encode()))

    async def feed() -> None:
        while chunk := await stdin.read(65536):
            writer.write(frame(STDIN, chunk))
            await writer.drain()
        writer.write(frame(STDIN_CLOSED))
        await writer.drain()

    async def terminate() -> None:
        await terminated.wait()
        writer.write(frame(TERMINATE))
        await writer.drain()

    helpers = [asyncio.create_task(feed()), asyncio.create_task(terminate())]
    try:
        while True:
            got = await read_frame(reader)
            if got is None:
                raise RelayError("the agent relay closed the connection")
            kind, payload = got
            if kind == STDOUT:
                await write_stdout(payload)
            elif kind == STDERR:
                await write_stderr(payload)
            elif kind == EXIT:
                return int(payload.decode() or "1")
    finally:
        for helper in helpers:
            helper.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
