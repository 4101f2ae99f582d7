"""A worker's git workspace: its own clone, and one branch `fleetgram/<task-id>` per task.

Several workers change one project at once because each keeps a clone of WORKSPACE_REPO and
works on a branch of its own; when a task ends the worker commits, pushes the branch (best
effort) and reports the files changed. Every git call is a subprocess bounded in time, so a
hanging remote never blocks the worker, and nothing here ever puts a secret on a command line,
in a file of its own, or in an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BRANCH_PREFIX = "fleetgram/"
INTERRUPTED_MESSAGE = "fleetgram: work of an interrupted run"
PROGRESS_MESSAGE = "fleetgram: work in progress"
EXCLUDED = ".fleetgram/"

# save_progress runs while a worker stops: each git call gets at most this long.
_SAVE_TIMEOUT = 3.0
# begin's refresh of origin is best effort: an unreachable remote must not hold a task long.
_FETCH_TIMEOUT = 30.0
# git's well-known empty tree: the base of a branch that shares no history with the default.
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# Variables that would point git at another repository or override our commit identity (a
# worker started from a git hook, or a test run inside one, inherits them).
_SCRUBBED = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
    "GIT_SHALLOW_FILE", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
    "GIT_ASKPASS", "GIT_TERMINAL_PROMPT",
})
# A task id becomes a branch name and a directory name: nothing that could escape either.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")
_SSH_TROUBLE = ("ssh:", "Host key verification failed", "kex_exchange_identification")
_GIT_PREFIX = re.compile(r"^(?:fatal|error|remote|warning):\s*", re.IGNORECASE)


class WorkspaceError(Exception):
    """One-line reason fit for a chat; never contains credentials."""


def safe_url(text: str) -> str:
    """`text` with any `user:pass@` of a URL removed."""
    return _USERINFO.sub("", text)


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None  # None for binary files
    removed: int | None

    @property
    def binary(self) -> bool:
        return self.added is None


@dataclass(frozen=True)
class BranchStart:
    branch: str  # "fleetgram/<task-id>"
    base: str  # commit sha the branch starts from (merge-base with the default branch)
    resumed: bool  # True: the branch existed (a rerun continues from it)


@dataclass(frozen=True)
class TaskChanges:
    branch: str
    commit: str | None  # the new commit's sha, None when nothing changed
    files: tuple[FileChange, ...]  # branch vs its base
    pushed: bool
    push_error: str | None

    def summary(self, limit: int = 15) -> str:
        """What the final chat message shows: the branch, a diff stat and the files."""
        head = f"branch {self.branch} · "
        if not self.files:
            lines = [head + "no changes"]
        else:
            added = sum(f.added or 0 for f in self.files)
            removed = sum(f.removed or 0 for f in self.files)
            count = len(self.files)
            noun = "file" if count == 1 else "files"
            lines = [f"{head}{count} {noun} changed, +{added} −{removed}"]
            for change in self.files[:limit]:
                stat = "binary" if change.binary else f"+{change.added} −{change.removed}"
                lines.append(f"{change.path} {stat}")
            if count > limit:
                lines.append(f"… and {count - limit} more")
        if self.push_error is not None:
            lines.append(f"not pushed ({self.push_error}); "
                         "the branch stays in the worker's clone")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Run:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace").strip()


class Workspace:
    """One worker's workspace: `root/repo` (the agent's cwd) and `root/home` (its HOME)."""

    def __init__(self, root: Path, repo: str | None, *, slot: str,
                 git_credentials: Path | None = None, timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.repo = repo
        self.slot = slot
        self.timeout = timeout
        self.repo_dir = self.root / "repo"
        self.home = self.root / "home"
        self._credentials = git_credentials
        self._askpass = self.root / "git-askpass.sh"
        self._lock = asyncio.Lock()
        self._env = self._make_env()
        self._config = [
            "-c", f"user.name=fleetgram {slot}",
            "-c", f"user.email={slot}@fleetgram.invalid",
            "-c", "commit.gpgsign=false",
        ]
        if self._userpass():
            # A credential helper from the host's config could store the password elsewhere.
            self._config += ["-c", "credential.helper="]

    # ---- public -------------------------------------------------------------------------

    def git_env(self) -> dict[str, str]:
        """The environment git runs with (a copy)."""
        return dict(self._env)

    def uploads(self, task_id: str) -> Path:
        """Where the files a user sent with the task's prompt go (never committed)."""
        path = self.repo_dir / ".fleetgram" / "uploads" / _checked(task_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def prepare(self) -> None:
        """Create the directories; with a repo, clone it or refresh the clone from origin."""
        for path in (self.root, self.repo_dir, self.home):
            path.mkdir(parents=True, exist_ok=True)
        if self.repo is None:
            return
        self._write_askpass()
        async with self._lock:
            if not (self.repo_dir / ".git").exists():
                if any(self.repo_dir.iterdir()):
                    raise WorkspaceError(
                        f"{self.repo_dir} is not empty and not a git clone; "
                        "empty it or choose another WORKSPACE_ROOT")
                await self._clone()
            else:
                self._drop_stale_lock()
                await self._fetch(self.timeout)
                # The origin's default branch may have changed since the clone.
                with contextlib.suppress(WorkspaceError):
                    await self._git("remote", "set-head", "origin", "--auto", check=False)
            self._exclude_uploads()

    async def begin(self, task_id: str) -> BranchStart | None:
        """Check out the task's branch: the one left by an earlier run, or a new one."""
        if self.repo is None:
            return None
        branch = BRANCH_PREFIX + _checked(task_id)
        async with self._lock:
            self._drop_stale_lock()
            await self._put_away_leftovers(task_id)
            await self._fetch(min(self.timeout, _FETCH_TIMEOUT))
            default = await self._default_ref()
            local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
            if await self._exists(local):
                resumed = True
                await self._git("checkout", "--quiet", branch)
                if await self._exists(remote) and await self._fast_forwardable(local, remote):
                    # Another worker ran this task later and pushed: continue from its work.
                    await self._git("reset", "--quiet", "--hard", remote)
            elif await self._exists(remote):
                resumed = True
                await self._git("checkout", "--quiet", "-b", branch, "--track", f"origin/{branch}")
            else:
                resumed = False
                await self._git("checkout", "--quiet", "--no-track", "-b", branch, default)
            # A rerun keeps the base recorded when the branch began (see _base).
            base = await self._base(branch) if resumed else await self._merge_base(branch,
                                                                                   default)
            await self._git("config", f"branch.{branch}.fleetgram-base", base)
            return BranchStart(branch=branch, base=base, resumed=resumed)

    async def save_progress(self, task_id: str) -> None:
        """Commit and push what the agent changed so far; best effort and quick."""
        if self.repo is None:
            return
        branch = BRANCH_PREFIX + _checked(task_id)
        limit = min(self.timeout, _SAVE_TIMEOUT)
        try:
            await asyncio.wait_for(self._lock.acquire(), limit)
        except TimeoutError:
            log.warning("workspace busy; progress not saved", extra={"task": task_id})
            return
        try:
            if await self._current_branch(limit) != branch:
                return  # never commit the task's work onto somebody else's branch
            if await self._commit(PROGRESS_MESSAGE, limit):
                await self._push(branch, limit)
        except Exception as e:  # best effort: a stopping worker must not fail on it
            log.warning("progress not saved", extra={"task": task_id, "error": str(e)})
        finally:
            self._lock.release()

    async def finish(self, task_id: str, title: str) -> TaskChanges | None:
        """Commit the task's changes, push its branch, and say what the task changed."""
        if self.repo is None:
            return None
        branch = BRANCH_PREFIX + _checked(task_id)
        async with self._lock:
            current = await self._current_branch()
            if current != branch:
                # The agent switched branches; carry its changes back (git refuses on conflict).
                run = await self._git("checkout", "--quiet", branch, check=False)
                if run.code != 0:
                    raise WorkspaceError(
                        f"the work tree is on {current or 'a detached HEAD'}, not {branch}: "
                        f"{self._reason(run.err)}")
            message = f"{task_id}: {_first_line(title)}" if title.strip() else task_id
            committed = await self._commit(message, self.timeout)
            commit = (await self._git("rev-parse", "HEAD")).text if committed else None
            base = await self._base(branch)
            files = await self._numstat(base, branch)
            pushed, push_error = False, None
            head = (await self._git("rev-parse", "HEAD")).text
            if head != base:
                pushed, push_error = await self._push(branch, self.timeout)
            return TaskChanges(branch=branch, commit=commit, files=files, pushed=pushed,
                               push_error=push_error)

    async def diff(self, task_id: str) -> str | None:
        """The task's patch (base..branch, binary-safe), or None if there is no such branch."""
        if self.repo is None or not _TASK_ID.fullmatch(task_id):
            return None
        branch = BRANCH_PREFIX + task_id
        async with self._lock:
            if not (self.repo_dir / ".git").exists():
                return None
            for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
                if await self._exists(ref):
                    base = await self._base(ref, config_branch=branch)
                    run = await self._git("diff", "--binary", "--no-color", "--no-ext-diff",
                                          base, ref)
                    return run.out.decode("utf-8", "replace")
            return None

    # ---- git steps ----------------------------------------------------------------------

    async def _clone(self) -> None:
        assert self.repo is not None
        run = await self._git("clone", "--quiet", "--", self.repo, str(self.repo_dir),
                              cwd=None, check=False)
        if run.code != 0:
            raise WorkspaceError(f"could not clone {safe_url(self.repo)}: {self._reason(run.err)}")

    async def _fetch(self, limit: float) -> None:
        """Best effort: an offline worker keeps working on what it has."""
        try:
            run = await self._git("fetch", "--quiet", "--prune", "origin", check=False,
                                  limit=limit)
        except WorkspaceError as e:
            log.warning("git fetch failed; working offline", extra={"error": str(e)})
            return
        if run.code != 0:
            log.warning("git fetch failed; working offline",
                        extra={"error": self._reason(run.err)})

    async def _put_away_leftovers(self, task_id: str) -> None:
        """Keep what an interrupted run left in the work tree, whichever branch it was on."""
        status = await self._git("status", "--porcelain", "--untracked-files=all")
        if not status.out.strip():
            return
        current = await self._current_branch()
        if current is not None and current.startswith(BRANCH_PREFIX):
            await self._commit(INTERRUPTED_MESSAGE, self.timeout)
            log.info("committed an interrupted run's work", extra={"branch": current})
        else:
            await self._git("stash", "push", "--quiet", "--include-untracked",
                            "-m", f"fleetgram: left in the work tree before {task_id}")
            log.warning("stashed uncommitted changes", extra={"branch": current})

    async def _commit(self, message: str, limit: float) -> bool:
        """Stage everything and commit it; False when there was nothing to commit."""
        await self._git("add", "--all", limit=limit)
        staged = await self._git("diff", "--cached", "--quiet", check=False, limit=limit)
        if staged.code == 0:
            return False
        # --no-verify: a repository's hook must not refuse or hold the agent's work.
        await self._git("commit", "--quiet", "--no-verify", "-m", message, limit=limit)
        return True

    async def _push(self, branch: str, limit: float) -> tuple[bool, str | None]:
        try:
            run = await self._git("push", "--quiet", "--no-verify", "origin",
                                  f"HEAD:refs/heads/{branch}", check=False, limit=limit)
        except WorkspaceError as e:
            return False, str(e)
        if run.code != 0:
            reason = self._reason(run.err)
            log.warning("git push failed", extra={"branch": branch, "error": reason})
            return False, reason
        return True, None

    async def _default_ref(self) -> str:
        run = await self._git("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", check=False)
        if run.code == 0 and run.text and await self._exists(run.text):
            return run.text
        for ref in ("refs/remotes/origin/main", "refs/remotes/origin/master",
                    "refs/heads/main", "refs/heads/master"):
            if await self._exists(ref):
                return ref
        run = await self._git("config", "--get", "init.defaultBranch", check=False)
        if run.code == 0 and run.text and await self._exists(f"refs/heads/{run.text}"):
            return f"refs/heads/{run.text}"
        raise WorkspaceError(
            "the repository has no default branch with a commit yet; push one first")

    async def _merge_base(self, ref: str, default: str) -> str:
        run = await self._git("merge-base", ref, default, check=False)
        return run.text if run.code == 0 and run.text else _EMPTY_TREE

    async def _base(self, ref: str, config_branch: str | None = None) -> str:
        """Where the task's branch started: recorded at begin, else the merge-base.

        The record matters once the branch has been merged into the default branch: the
        merge-base is then the branch itself and the task's diff would look empty."""
        branch = config_branch or ref
        run = await self._git("config", "--get", f"branch.{branch}.fleetgram-base", check=False)
        if run.code == 0 and run.text:
            ancestor = await self._git("merge-base", "--is-ancestor", run.text, ref, check=False)
            if ancestor.code == 0 or run.text == _EMPTY_TREE:
                return run.text
        return await self._merge_base(ref, await self._default_ref())

    async def _numstat(self, base: str, ref: str) -> tuple[FileChange, ...]:
        run = await self._git("diff", "--numstat", "-z", "--no-renames", "--no-color",
                              base, ref)
        changes = []
        for entry in run.out.split(b"\0"):
            if not entry:
                continue
            added, removed, path = entry.decode("utf-8", "replace").split("\t", 2)
            binary = added == "-"
            changes.append(FileChange(path=path, added=None if binary else int(added),
                                      removed=None if binary else int(removed)))
        return tuple(changes)

    async def _current_branch(self, limit: float | None = None) -> str | None:
        run = await self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False,
                              limit=limit)
        return run.text if run.code == 0 and run.text else None

    async def _exists(self, ref: str) -> bool:
        run = await self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}",
                              check=False)
        return run.code == 0

    async def _fast_forwardable(self, local: str, remote: str) -> bool:
        """True when `remote` is strictly ahead of `local`."""
        run = await self._git("merge-base", "--is-ancestor", local, remote, check=False)
        if run.code != 0:
            return False
        same = await self._git("rev-parse", local, remote)
        first, _, second = same.text.partition("\n")
        return first != second

    async def _git(self, *args: str, cwd: Path | str | None = "", check: bool = True,
                   limit: float | None = None) -> _Run:
        """Run one git command, bounded in time; raise WorkspaceError when it fails."""
        limit = self.timeout if limit is None else limit
        where = self.repo_dir if cwd == "" else cwd
        proc = await asyncio.create_subprocess_exec(
            "git", *self._config, *args, cwd=where, env=self._env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # Its own session: no terminal to prompt on, and a timeout kills ssh or a remote
            # helper along with git.
            start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            await _stop(proc)
            raise WorkspaceError(f"git {args[0]} took longer than {limit:g}s") from None
        except BaseException:
            _signal_group(proc, signal.SIGKILL)
            # Reaped here, not by the garbage collector once the loop may be closed.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 2.0)
            raise
        code = proc.returncode if proc.returncode is not None else -1
        result = _Run(code=code, out=out, err=err.decode("utf-8", "replace"))
        if check and code != 0:
            raise WorkspaceError(f"git {args[0]} failed: {self._reason(result.err)}")
        return result

    # ---- credentials and safety ---------------------------------------------------------

    def _userpass(self) -> bool:
        c = self._credentials
        return c is not None and (c / "username").is_file() and (c / "password").is_file()

    def _make_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED
               and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))}
        env["GIT_TERMINAL_PROMPT"] = "0"  # a failed login fails instead of waiting for a user
        env["LC_ALL"] = "C"  # git's messages in English, so our reasons read the same everywhere
        c = self._credentials
        if c is not None and (c / "ssh-privatekey").is_file():
            env["GIT_SSH_COMMAND"] = " ".join([
                "ssh", "-i", shlex.quote(str((c / "ssh-privatekey").resolve())),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", "UserKnownHostsFile=" + shlex.quote(str(self.root / "known_hosts")),
            ])
        elif self._userpass():
            env["GIT_ASKPASS"] = str(self._askpass)
        return env

    def _write_askpass(self) -> None:
        """A script that reads the secret from the credentials dir when git asks for it.

        It names the files, never their contents, so the password is not copied anywhere."""
        if not self._userpass():
            return
        assert self._credentials is not None
        creds = self._credentials.resolve()
        user = shlex.quote(str(creds / "username"))
        password = shlex.quote(str(creds / "password"))
        script = (
            "#!/bin/sh\n"
            "# fleetgram: git asks for 'Username for ...' or 'Password for ...'\n"
            'case "$1" in\n'
            f"  [Uu]sername*) exec cat {user} ;;\n"
            f"  *) exec cat {password} ;;\n"
            "esac\n"
        )
        self._askpass.write_text(script)
        self._askpass.chmod(0o700)

    def _exclude_uploads(self) -> None:
        exclude = self.repo_dir / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        current = exclude.read_text() if exclude.exists() else ""
        if EXCLUDED in current.splitlines():
            return
        prefix = "" if not current or current.endswith("\n") else "\n"
        with exclude.open("a") as f:
            f.write(f"{prefix}# the files users send with prompts (fleetgram)\n{EXCLUDED}\n")

    def _drop_stale_lock(self) -> None:
        """A worker killed during a git command leaves index.lock; nothing else runs git here
        between tasks, so the lock is stale and would fail every later command."""
        lock = self.repo_dir / ".git" / "index.lock"
        if lock.exists():
            log.warning("removing a stale git index.lock", extra={"path": str(lock)})
            lock.unlink(missing_ok=True)

    def _reason(self, stderr: str) -> str:
        """git's last message line, fit for a chat: one line, no credentials."""
        lines = [line.strip() for line in stderr.splitlines()
                 if line.strip() and not line.startswith("hint:")]
        # git's first fatal or error line says what went wrong; the lines after it are advice
        # ("Please make sure you have the correct access rights"). A refused push says why in
        # its "! [rejected]" line.
        # ssh's own line ("connect to host ... refused", "Permission denied (publickey)")
        # says more than git's "Could not read from remote repository" after it.
        chosen = (next((ln for ln in lines if ln.startswith("! [")), None)
                  or next((ln for ln in lines if ln.startswith(_SSH_TROUBLE)
                           or "Permission denied (" in ln), None)
                  or next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
                  or (lines[-1] if lines else "no reason given"))
        line = " ".join(_GIT_PREFIX.sub("", chosen).removeprefix("! ").split())
        line = safe_url(line)
        secret = self._password()
        if secret:
            line = line.replace(secret, "***")
        return line[:300]

    def _password(self) -> str | None:
        if not self._userpass():
            return None
        assert self._credentials is not None
        try:
            secret = (self._credentials / "password").read_text().strip()
        except OSError:
            return None
        return secret if len(secret) >= 4 else None


def _checked(task_id: str) -> str:
    if not _TASK_ID.fullmatch(task_id) or task_id.endswith(".lock"):
        raise WorkspaceError(f"{task_id!r} cannot name a branch")
    return task_id


def _first_line(title: str, width: int = 72) -> str:
    line = title.strip().splitlines()[0].strip()
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM first, so git removes its lock files; SIGKILL if it does not go."""
    _signal_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 2.0)
    except TimeoutError:
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 2.0)
