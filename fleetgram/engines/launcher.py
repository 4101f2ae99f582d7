"""`fleetgram-agent-cli`: starts the Claude Code CLI with only the environment it needs.

The Agent SDK starts the CLI with the worker's whole environment (os.environ plus its own
variables), and the agent's commands inherit the CLI's. The worker's environment holds the
bot tokens, DATABASE_URL and, on Kubernetes, whatever the pod was given: none of it is the
agent's business. The SDK runs this launcher as its `cli_path`; it keeps the variables named
below and execs the real CLI in place (no extra process stays behind).
"""

from __future__ import annotations

import os
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


def kept_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` the CLI (and so the agent's commands) may see."""
    return {k: v for k, v in env.items() if k in KEEP or k.startswith(KEEP_PREFIXES)}


def bundled_cli() -> Path:
    """The Claude Code CLI inside the installed claude-agent-sdk wheel."""
    import claude_agent_sdk

    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def main() -> None:
    real = os.environ.get(REAL_CLI) or str(bundled_cli())
    os.execve(real, [real, *sys.argv[1:]], kept_environment(os.environ))


if __name__ == "__main__":
    main()
