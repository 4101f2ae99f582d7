"""Agent mode end to end: the real fleet, the real Claude Code CLI (bundled in
claude-agent-sdk) and real git, against the Telegram and Claude emulators.

The CLI talks HTTP to the Claude emulator, which answers with scripted tool calls
(tests/emulators/agent_script.py) using the tool names and schemas the CLI itself sends.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.harness import World

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid",
       "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def make_origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on main (README.md): what WORKSPACE_REPO names."""
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q")
    (seed / "README.md").write_text("# demo\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-qm", "initial")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    git(seed, "push", "-q", str(origin), "main")
    return origin


def show(origin: Path, ref: str, path: str) -> str:
    return git(origin, "show", f"{ref}:{path}")


def branches(origin: Path) -> list[str]:
    out = git(origin, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return sorted(out.split())


def agent_overrides(tmp_path: Path, origin: Path | None, **more: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "WORKER_ENGINE": "agent",
        "DATA_DIR": str(tmp_path / "data"),
        "WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "PERMISSION_MODE": "all",
        "CLAUDE_MAX_RETRIES": "0",
        "STREAM_EDIT_INTERVAL": "0.2",
    }
    if origin is not None:
        overrides["WORKSPACE_REPO"] = str(origin)
    overrides.update(more)
    return overrides


def request_texts(world: World) -> list[str]:
    """Every text the CLI sent to Claude, request by request (for 'Claude was told ...')."""
    import json

    return [json.dumps(body) for body in world.claude.requests]
