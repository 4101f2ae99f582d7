"""`fleetgram-agent-cli`: starts the Claude Code CLI with only the environment it needs.

The Agent SDK starts the CLI with the worker's whole environment (os.environ plus its own
variables), and the agent's commands inherit the CLI's. The worker's environment holds the
bot tokens, DATABASE_URL and, on Kubernetes, whatever the pod was given: none of it is the
agent's business. The SDK runs this launcher as its `cli_path`; it keeps the variables named
below and execs the real CLI in place (no extra process stays behind).

With AGENT_RELAY=host:port (Kubernetes: the pod's `agent` container) the CLI is not started
here at all: the launcher pipes its stdin and stdout to the relay, which starts the CLI in a
container without the worker's secrets (fleetgram.engines.relay).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

# Exact names kept from the environment.
KEEP = frozenset({
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "TMPDIR", "PWD", "USER",
    "SHELL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", "IS_SANDBOX",
    "ENABLE_TOOL_SEARCH", "NO_PROXY", "HTTPS_PROXY", "HTTP_PROXY",
})
# Prefixes kept: the CLI's own settings and the variables the SDK sets for it.
KEEP_PREFIXES = ("CLAUDE_CODE_", "CLAUDE_AGENT_SDK_", "CLAUDE_CONFIG_DIR")
# Where the launcher finds the CLI it starts (set by the engine; default: the SDK's bundle).
REAL_CLI = "FLEETGRAM_REAL_CLI"
# host:port of the agent relay; when set the CLI runs there, not here.
RELAY = "AGENT_RELAY"


def kept_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` the CLI (and so the agent's commands) may see. An empty value
    counts as unset: the engine blanks an inherited variable (a stray API key) that way."""
    return {k: v for k, v in env.items()
            if v and (k in KEEP or k.startswith(KEEP_PREFIXES))}


def bundled_cli() -> Path:
    """The Claude Code CLI inside the installed claude-agent-sdk wheel."""
    import claude_agent_sdk

    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def main() -> None:
    relay = os.environ.get(RELAY)
    if relay:
        raise SystemExit(asyncio.run(_through_relay(relay)))
    real = os.environ.get(REAL_CLI) or str(bundled_cli())
    os.execve(real, [real, *sys.argv[1:]], kept_environment(os.environ))


async def _through_relay(address: str) -> int:
    from fleetgram.engines.relay import RelayError, pipe_through_relay

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    terminated = asyncio.Event()
    # The SDK ends a CLI with SIGTERM: pass it on, the relay stops the CLI's process group.
    loop.add_signal_handler(signal.SIGTERM, terminated.set)

    async def out(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    async def err(data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()

    try:
        return await pipe_through_relay(
            address, sys.argv[1:], kept_environment(os.environ), os.getcwd(), stdin=stdin,
            write_stdout=out, write_stderr=err, terminated=terminated)
    except RelayError as error:
        print(f"fleetgram-agent-cli: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    main()
