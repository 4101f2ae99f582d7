"""A worker's git workspace: one clone per worker, one branch per task, nothing ever lost."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleetgram.workspace import (
    FileChange,
    TaskChanges,
    Workspace,
    WorkspaceError,
)

PASSWORD = "hunter2-very-secret"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["LC_ALL"] = "C"
    return env


def git(*args: str, cwd: Path | None = None) -> str:
    run = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, check=True)
    return run.stdout.strip()


def seed(repo: Path) -> None:
    (repo / "README.md").write_text("# project\n")
    git("add", "README.md", cwd=repo)
    git("commit", "-m", "initial", cwd=repo)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin whose default branch `main` holds a README."""
    bare = tmp_path / "origin.git"
    git("init", "--quiet", "--bare", "-b", "main", str(bare))
    work = tmp_path / "seed"
    git("init", "--quiet", "-b", "main", str(work))
    seed(work)
    git("push", "--quiet", str(bare), "main", cwd=work)
    return bare


def workspace(tmp_path: Path, origin: Path | str | None, slot: str = "w1",
              **kwargs: object) -> Workspace:
    repo = None if origin is None else str(origin)
    return Workspace(tmp_path / "ws" / slot, repo, slot=slot, **kwargs)  # type: ignore[arg-type]


def on_origin(origin: Path, ref: str, path: str) -> str:
    return git("--git-dir", str(origin), "show", f"{ref}:{path}")


async def test_a_tasks_branch_starts_from_the_origins_default_branch_and_holds_the_agents_files(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    start = await ws.begin("t-abc12")
    assert start is not None
    assert start.branch == "fleetgram/t-abc12"
    assert start.base == git("--git-dir", str(origin), "rev-parse", "main")
    assert not start.resumed
    (ws.repo_dir / "hello.py").write_text("print('hello')\n")

    changes = await ws.finish("t-abc12", "create hello.py")

    assert changes is not None and changes.commit is not None
    assert changes.files == (FileChange("hello.py", 1, 0),)
    assert changes.pushed and changes.push_error is None
    assert on_origin(origin, "fleetgram/t-abc12", "hello.py") == "print('hello')"
    assert git("log", "-1", "--format=%s%n%an <%ae>", changes.commit, cwd=ws.repo_dir) == (
        "t-abc12: create hello.py\nfleetgram w1 <w1@fleetgram.invalid>")
    assert changes.summary() == (
        "branch fleetgram/t-abc12 · 1 file changed, +1 −0\nhello.py +1 −0")


async def test_a_non_bare_origin_whose_default_branch_is_trunk_gives_the_base(
        tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    git("init", "--quiet", "-b", "trunk", str(upstream))
    seed(upstream)
    git("branch", "other", cwd=upstream)
    ws = workspace(tmp_path, upstream)
    await ws.prepare()

    start = await ws.begin("t-1")

    assert start is not None
    assert start.base == git("rev-parse", "trunk", cwd=upstream)
    (ws.repo_dir / "a.txt").write_text("a\n")
    changes = await ws.finish("t-1", "add a")
    assert changes is not None and changes.pushed  # a branch other than trunk: push allowed
    assert git("show", "fleetgram/t-1:a.txt", cwd=upstream) == "a"


async def test_two_workspaces_of_one_origin_work_at_once_and_both_branches_reach_the_origin(
        tmp_path: Path, origin: Path) -> None:
    first, second = workspace(tmp_path, origin, "w1"), workspace(tmp_path, origin, "w2")
    await asyncio.gather(first.prepare(), second.prepare())
    await asyncio.gather(first.begin("t-1"), second.begin("t-2"))
    (first.repo_dir / "code.py").write_text("x = 1\n")
    (second.repo_dir / "docs.md").write_text("docs\n")

    one, two = await asyncio.gather(first.finish("t-1", "code"), second.finish("t-2", "docs"))

    assert one is not None and two is not None
    assert [f.path for f in one.files] == ["code.py"]
    assert [f.path for f in two.files] == ["docs.md"]
    assert one.pushed and two.pushed
    assert on_origin(origin, "fleetgram/t-1", "code.py") == "x = 1"
    assert on_origin(origin, "fleetgram/t-2", "docs.md") == "docs"


async def test_a_rerun_after_an_interrupted_run_resumes_the_branch_with_the_work_kept(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "half.py").write_text("half done\n")
    # The worker dies here; a new process opens the same workspace.
    again = workspace(tmp_path, origin)
    await again.prepare()

    start = await again.begin("t-1")

    assert start is not None and start.resumed
    assert (again.repo_dir / "half.py").read_text() == "half done\n"
    assert git("status", "--porcelain", cwd=again.repo_dir) == ""
    assert git("log", "-1", "--format=%s", cwd=again.repo_dir) == (
        "fleetgram: work of an interrupted run")


async def test_another_tasks_leftovers_are_committed_to_that_tasks_branch_before_switching(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "left.py").write_text("left over\n")

    start = await ws.begin("t-2")

    assert start is not None and not start.resumed
    assert not (ws.repo_dir / "left.py").exists()
    assert git("show", "fleetgram/t-1:left.py", cwd=ws.repo_dir) == "left over"


async def test_leftovers_on_a_branch_of_the_users_own_are_stashed_not_lost(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    (ws.repo_dir / "mine.txt").write_text("by hand\n")

    await ws.begin("t-1")

    assert not (ws.repo_dir / "mine.txt").exists()
    assert git("log", "-1", "--format=%s", "main", cwd=ws.repo_dir) == "initial"
    assert "mine.txt" in git("show", "--name-only", "stash@{0}^3", cwd=ws.repo_dir)


async def test_a_rerun_on_another_worker_continues_from_the_branch_its_progress_was_pushed_to(
        tmp_path: Path, origin: Path) -> None:
    first, second = workspace(tmp_path, origin, "w1"), workspace(tmp_path, origin, "w2")
    await first.prepare()
    await second.prepare()
    await first.begin("t-1")
    (first.repo_dir / "wip.py").write_text("wip\n")
    await first.save_progress("t-1")

    start = await second.begin("t-1")

    assert start is not None and start.resumed
    assert (second.repo_dir / "wip.py").read_text() == "wip\n"
    changes = await second.finish("t-1", "done")
    assert changes is not None and changes.commit is None
    assert [f.path for f in changes.files] == ["wip.py"]


async def test_finish_with_no_changes_reports_no_commit_and_no_changes(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")

    changes = await ws.finish("t-1", "look around")

    assert changes is not None
    assert changes.commit is None and changes.files == ()
    assert changes.summary() == "branch fleetgram/t-1 · no changes"


async def test_binary_files_appear_as_binary_in_the_summary(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff" * 20)
    (ws.repo_dir / "app.py").write_text("a = 1\nb = 2\n")

    changes = await ws.finish("t-1", "logo")

    assert changes is not None
    assert changes.summary().splitlines() == [
        "branch fleetgram/t-1 · 2 files changed, +2 −0", "app.py +2 −0", "logo.png binary"]


def test_the_summary_names_at_most_limit_files_and_counts_the_rest() -> None:
    files = tuple(FileChange(f"f{i}.py", 1, 1) for i in range(20))
    changes = TaskChanges("fleetgram/t-1", "abc", files, pushed=True, push_error=None)

    lines = changes.summary(limit=15).splitlines()

    assert lines[0] == "branch fleetgram/t-1 · 20 files changed, +20 −20"
    assert lines[1:16] == [f"f{i}.py +1 −1" for i in range(15)]
    assert lines[16:] == ["… and 5 more"]


def test_the_summary_of_a_failed_push_says_the_branch_stays_in_the_workers_clone() -> None:
    changes = TaskChanges("fleetgram/t-1", "abc", (FileChange("a.py", 3, 0),), pushed=False,
                          push_error="Could not resolve host: example.invalid")

    assert changes.summary().splitlines()[-1] == (
        "not pushed (Could not resolve host: example.invalid); "
        "the branch stays in the worker's clone")


async def test_diff_returns_the_tasks_patch_including_a_new_file(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "new.py").write_text("print('new')\n")
    (ws.repo_dir / "README.md").write_text("# project\nmore\n")
    await ws.finish("t-1", "new file")

    patch = await ws.diff("t-1")

    assert patch is not None
    assert "diff --git a/new.py b/new.py\nnew file mode 100644" in patch
    assert "+print('new')" in patch
    assert "+more" in patch
    check = tmp_path / "check"
    git("clone", "--quiet", str(origin), str(check))
    (check / "task.patch").write_text(patch)
    git("apply", "--check", "task.patch", cwd=check)


async def test_diff_of_a_task_without_a_branch_is_none(tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()

    assert await ws.diff("t-unknown") is None


async def test_diff_after_the_branch_was_merged_into_main_still_shows_the_task(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "new.py").write_text("x\n")
    await ws.finish("t-1", "new")
    git("push", "--quiet", "origin", "fleetgram/t-1:main", cwd=ws.repo_dir)
    git("fetch", "--quiet", "origin", cwd=ws.repo_dir)

    patch = await ws.diff("t-1")

    assert patch is not None and "new.py" in patch


async def test_an_unreachable_origin_at_push_still_reports_the_changes_with_the_reason(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "a.py").write_text("a\n")
    origin.rename(tmp_path / "gone.git")

    changes = await ws.finish("t-1", "offline")

    assert changes is not None and changes.commit is not None
    assert [f.path for f in changes.files] == ["a.py"]
    assert not changes.pushed
    assert changes.push_error is not None and "\n" not in changes.push_error
    assert "does not appear to be a git repository" in changes.push_error
    assert "stays in the worker's clone" in changes.summary()


async def test_an_offline_worker_still_begins_a_task_from_what_it_has(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    origin.rename(tmp_path / "gone.git")
    await ws.prepare()

    start = await ws.begin("t-1")

    assert start is not None and not start.resumed


async def test_a_repo_that_does_not_exist_fails_prepare_with_a_readable_reason(
        tmp_path: Path) -> None:
    ws = workspace(tmp_path, "file:///nonexistent")

    with pytest.raises(WorkspaceError) as caught:
        await ws.prepare()

    message = str(caught.value)
    assert message.startswith("could not clone file:///nonexistent: ")
    assert "\n" not in message and "does not appear to be a git repository" in message


async def test_a_failed_clone_never_shows_the_urls_password(tmp_path: Path) -> None:
    ws = workspace(tmp_path, "https://user:secret@127.0.0.1:9/x.git")

    with pytest.raises(WorkspaceError) as caught:
        await ws.prepare()

    message = str(caught.value)
    assert message.startswith("could not clone https://127.0.0.1:9/x.git: ")
    assert "secret" not in message and "\n" not in message


async def test_a_non_empty_directory_that_is_not_a_clone_is_refused(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    ws.repo_dir.mkdir(parents=True)
    (ws.repo_dir / "stray.txt").write_text("?")

    with pytest.raises(WorkspaceError, match="not empty and not a git clone"):
        await ws.prepare()


async def test_a_git_command_that_overruns_is_stopped_with_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 30 #")  # a remote that never answers
    ws = workspace(tmp_path, "ssh://example.invalid/x.git", timeout=1.0)
    started = time.monotonic()

    with pytest.raises(WorkspaceError, match="took longer than 1s"):
        await ws.prepare()

    assert time.monotonic() - started < 6


async def test_uploads_are_never_committed(tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin)
    await ws.prepare()
    await ws.begin("t-1")
    (ws.uploads("t-1") / "photo.jpg").write_bytes(b"\xff\xd8 photo")
    (ws.repo_dir / "a.py").write_text("a\n")

    changes = await ws.finish("t-1", "with a photo")

    assert ws.uploads("t-1") == ws.repo_dir / ".fleetgram" / "uploads" / "t-1"
    assert changes is not None and [f.path for f in changes.files] == ["a.py"]
    assert (ws.uploads("t-1") / "photo.jpg").exists()
    await ws.prepare()  # once more: the exclude line is not repeated
    exclude = (ws.repo_dir / ".git" / "info" / "exclude").read_text()
    assert exclude.splitlines().count(".fleetgram/") == 1


def _credentials(tmp_path: Path) -> Path:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "username").write_text("robot\n")
    (creds / "password").write_text(PASSWORD)
    return creds


async def test_the_askpass_script_answers_git_from_the_credentials_files(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin, git_credentials=_credentials(tmp_path))
    await ws.prepare()
    askpass = ws.git_env()["GIT_ASKPASS"]

    def ask(prompt: str) -> str:
        return subprocess.run([askpass, prompt], capture_output=True, text=True,
                              check=True).stdout

    assert ask("Username for 'https://git.example.com': ").strip() == "robot"
    assert ask("Password for 'https://robot@git.example.com': ") == PASSWORD
    assert ws.git_env()["GIT_TERMINAL_PROMPT"] == "0"


async def test_no_file_under_the_root_holds_the_password(
        tmp_path: Path, origin: Path) -> None:
    ws = workspace(tmp_path, origin, git_credentials=_credentials(tmp_path))
    await ws.prepare()
    await ws.begin("t-1")
    (ws.repo_dir / "a.py").write_text("a\n")
    await ws.finish("t-1", "a")

    holding = [p for p in ws.root.rglob("*")
               if p.is_file() and PASSWORD.encode() in p.read_bytes()]

    assert holding == []


class _BasicAuthFiles(SimpleHTTPRequestHandler):
    """Git's "dumb" HTTP protocol is plain files: enough to prove the login reaches git."""

    expected = "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_like_origin(origin: Path) -> Iterator[str]:
    """The origin served over HTTP behind a username and password."""
    git("--git-dir", str(origin), "update-server-info")
    handler = functools.partial(_BasicAuthFiles, directory=str(origin.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{origin.name}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_username_and_password_from_the_credentials_dir_let_git_clone(
        tmp_path: Path, https_like_origin: str) -> None:
    ws = workspace(tmp_path, https_like_origin, git_credentials=_credentials(tmp_path))

    await ws.prepare()

    assert (ws.repo_dir / "README.md").read_text() == "# project\n"
    holding = [p for p in ws.root.rglob("*")
               if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert holding == []


async def test_a_wrong_password_fails_the_clone_at_once_without_a_prompt(
        tmp_path: Path, https_like_origin: str) -> None:
    creds = _credentials(tmp_path)
    (creds / "password").write_text("wrong-password")
    ws = workspace(tmp_path, https_like_origin, git_credentials=creds, timeout=20.0)

    with pytest.raises(WorkspaceError) as caught:
        await ws.prepare()

    assert "Authentication failed" in str(caught.value)
    assert "wrong-password" not in str(caught.value)


def test_an_ssh_key_makes_git_use_only_that_key_and_a_known_hosts_file_of_its_own(
        tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ssh-privatekey").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    ws = workspace(tmp_path, "git@example.com:org/x.git", git_credentials=creds)

    command = ws.git_env()["GIT_SSH_COMMAND"]

    assert f"-i {creds / 'ssh-privatekey'}" in command
    assert "IdentitiesOnly=yes" in command and "StrictHostKeyChecking=accept-new" in command
    assert f"UserKnownHostsFile={ws.root / 'known_hosts'}" in command


async def test_without_a_repo_there_is_no_branch_and_the_directories_exist(
        tmp_path: Path) -> None:
    ws = workspace(tmp_path, None)
    await ws.prepare()

    assert await ws.begin("t-1") is None
    assert await ws.finish("t-1", "chat") is None
    assert await ws.diff("t-1") is None
    assert ws.repo_dir.is_dir() and ws.home.is_dir()
    assert ws.uploads("t-1").is_dir()
