"""One configuration object, built from the environment (and `.env`) and validated at start-up.

Every error names the setting that is wrong, so a typo in `.env` is a one-line fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from fleetgram.domain import slot_name

_T = TypeVar("_T")

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant working as one of several parallel workers. "
    "The user reads your answer in Telegram on a phone: be direct, use Markdown sparingly "
    "(headings, lists, code blocks), and put code in fenced blocks."
)


class ConfigError(ValueError):
    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class ConfigErrors(ConfigError):
    """Every configuration error found at once, so one edit of `.env` fixes them all.

    It is also a ConfigError: `setting` and `problem` are the first error's."""

    def __init__(self, errors: list[ConfigError]) -> None:
        assert errors, "ConfigErrors needs at least one error"
        super().__init__(errors[0].setting, errors[0].problem)
        self.args = ("; ".join(str(e) for e in errors),)
        self.errors = list(errors)

    def __str__(self) -> str:
        return self.args[0]

    @property
    def settings(self) -> list[str]:
        return [e.setting for e in self.errors]


class Mode(StrEnum):
    SINGLE = "single"
    KUBERNETES = "kubernetes"


class EngineKind(StrEnum):
    """What runs a task: the Messages API (talk only) or Claude Code (tools in a workspace)."""

    CHAT = "chat"
    AGENT = "agent"


class PermissionMode(StrEnum):
    """What an agent may do without asking the task's user (agent mode)."""

    ASK = "ask"  # every edit and command is asked with buttons
    EDITS = "edits"  # file edits allowed, commands asked
    ALL = "all"  # nothing asked
    PLAN = "plan"  # read only


@dataclass(frozen=True)
class Settings:
    master_bot_token: str
    worker_token_pool: tuple[str, ...]
    allowed_user_ids: frozenset[int]
    anthropic_api_key: str
    anthropic_base_url: str | None = None
    claude_model: str = DEFAULT_MODEL
    claude_max_tokens: int = 4096
    claude_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    claude_timeout: float = 600.0
    claude_max_retries: int = 4
    # Seconds a stream may go without new content (pings do not count) before it is failed.
    claude_stall_timeout: float = 60.0
    # The model's context window in tokens; at compact_at of it, older turns are compacted.
    claude_context_window: int = 200_000
    compact_at: float = 0.8
    min_workers: int = 1
    max_workers: int = 5
    scale_up_threshold: int = 3
    scale_down_delay: float = 60.0
    max_attempts: int = 3
    worker_lease_seconds: float = 30.0
    heartbeat_interval: float = 5.0
    poll_interval: float = 0.5
    stream_edit_interval: float = 1.0
    stream_drafts: bool = True  # private chats stream with sendMessageDraft (Bot API 9.5+)
    # Per-user limits: pending tasks at once, and prompts accepted per minute.
    max_pending_per_user: int = 20
    prompts_per_minute: int = 20
    # Finished tasks, delivered notices and usage-ledger rows are deleted after this many days.
    retention_days: float = 30.0
    # Messages of one paste that a Telegram app split arrive within this many seconds.
    paste_merge_window: float = 1.5
    # Voice notes: an OpenAI-compatible transcription endpoint (fleetgram.transcribe).
    transcribe_url: str | None = None
    transcribe_api_key: str | None = None
    transcribe_model: str = "whisper-1"
    transcribe_timeout: float = 60.0
    # How often the orchestrator looks for messages waiting in stopped workers' chats.
    stopped_worker_poll: float = 5.0
    database_url: str = "sqlite:///fleetgram.sqlite3"
    telegram_api_url: str = "https://api.telegram.org"
    mode: Mode = Mode.SINGLE
    namespace: str = "default"
    metrics_port: int = 0
    # GET /healthz and /readyz (fleetgram.health); 0 turns the endpoint off.
    health_port: int = 8081
    log_level: str = "INFO"
    worker_token: str | None = None  # cluster mode: the one token of this worker's Secret
    pool_name: str = "fleetgram"  # cluster mode: the WorkerPool this process belongs to
    # Agent mode (WORKER_ENGINE=agent): see README "Agent mode".
    worker_engine: EngineKind = EngineKind.CHAT
    claude_code_oauth_token: str | None = None
    data_dir: Path = Path("fleetgram-data")
    workspace_root: Path = Path("fleetgram-data/workspaces")
    workspace_repo: str | None = None  # a git URL or a local path; each worker clones it
    # A directory with `username` and `password` (HTTPS) or `ssh-privatekey` files for git.
    workspace_git_credentials: Path | None = None
    permission_mode: PermissionMode = PermissionMode.ASK
    approval_timeout: float = 600.0
    task_budget_usd: float | None = None
    task_max_turns: int | None = None
    agent_verbose: int = 1  # /verbose default: 0 answer only, 1 one line per tool, 2 and results
    agent_sandbox: bool = False  # the Claude Code CLI's own sandbox for Bash (bubblewrap)
    agent_cli_path: str | None = None  # default: the CLI bundled in claude-agent-sdk
    # host:port of `fleetgram agent-relay`: the CLI runs there (Kubernetes: the agent container)
    agent_relay: str | None = None
    # Daily spending budgets (fleetgram.budget): dollars a user may spend per day in
    # BUDGET_TIMEZONE (None: no budget), per-user overrides, and who sees the fleet's usage.
    user_daily_budget_usd: float | None = None
    user_budgets_usd: Mapping[int, float | None] = field(default_factory=dict)
    admin_user_ids: frozenset[int] = frozenset()
    budget_timezone: str = "UTC"
    # /addworker (Bot API 9.6 managed bots): the Fernet key that encrypts the tokens of worker
    # bots added at run time (fleetgram/tokens.py); None: /addworker is not configured.
    token_encryption_key: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def workspace_for(self, slot: str) -> Path:
        return self.workspace_root / slot

    @property
    def slot_names(self) -> list[str]:
        return [slot_name(i) for i in range(len(self.worker_token_pool))]

    def token_for(self, slot: str) -> str:
        if self.worker_token:
            return self.worker_token
        return self.worker_token_pool[self.slot_names.index(slot)]

    @property
    def telegram_base_url(self) -> str:
        return self.telegram_api_url.rstrip("/") + "/bot"

    @property
    def telegram_file_url(self) -> str:
        return self.telegram_api_url.rstrip("/") + "/file/bot"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None,
         maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"must be 1 or 0, got {raw!r}")


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0,
           what: str = "a number of seconds") -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be {what}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf
        raise ConfigError(name, f"must be {what}, got {raw!r}")
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _looks_like_token(token: str) -> bool:
    bot_id, _, secret = token.partition(":")
    return bot_id.isdigit() and len(secret) >= 5


def _required(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, f"is not set ({hint})")
    return value


class _Collector:
    """Runs each setting's parser, keeping its error instead of stopping at the first one."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, setting: str, problem: str) -> None:
        self.errors.append(ConfigError(setting, problem))

    def get(self, parse: Callable[[], _T], fallback: _T) -> _T:
        try:
            return parse()
        except ConfigError as error:
            self.errors.append(error)
            return fallback


class EnvFileMissing(ConfigError):
    """An --env-file that was named explicitly but does not exist."""


def read_env(dotenv: Path | None, *, required: bool = False) -> dict[str, str]:
    """os.environ with `dotenv` filling gaps. A missing `dotenv` is fine unless `required`
    (the user named it), then it is an EnvFileMissing naming the file."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        if dotenv.is_file():
            from dotenv import dotenv_values

            try:
                values = dotenv_values(dotenv)
            except OSError as exc:
                raise EnvFileMissing(
                    f"--env-file {dotenv}", f"cannot be read ({exc.strerror or exc})"
                ) from None
            merged.update({k: v for k, v in values.items() if v is not None})
        elif required:
            problem = "is a directory, not a file" if dotenv.is_dir() else "no such file"
            raise EnvFileMissing(f"--env-file {dotenv}", problem)
    merged.update(os.environ)
    return merged


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    dotenv: Path | None = Path(".env"),
    need_master: bool = True,
    need_workers: bool = True,
    need_claude: bool = True,
) -> Settings:
    """Build Settings from `env` (default: os.environ, with `.env` filling gaps).

    Each component requires only what it uses: `need_master` the master's token,
    `need_workers` worker tokens, `need_claude` ANTHROPIC_API_KEY (or, in agent mode,
    CLAUDE_CODE_OAUTH_TOKEN). The Kubernetes operator needs none of them, the master
    no Claude credentials.

    Raises ConfigErrors holding every error found, each naming its setting."""
    if env is None:
        env = read_env(dotenv)
    c = _Collector()

    master = env.get("MASTER_BOT_TOKEN", "").strip()
    if need_master:
        master = c.get(lambda: _required(
            env, "MASTER_BOT_TOKEN", "the master bot's token from @BotFather"), "")
        if master and not _looks_like_token(master):
            c.add("MASTER_BOT_TOKEN", "does not look like a bot token (123456:ABC...)")

    pool_raw = env.get("WORKER_TOKEN_POOL", "")
    pool = tuple(t.strip() for t in pool_raw.split(",") if t.strip())
    worker_token = env.get("WORKER_TOKEN", "").strip() or None
    if worker_token is not None and not _looks_like_token(worker_token):
        c.add("WORKER_TOKEN", "does not look like a bot token (123456:ABC...)")
    if need_workers and not pool and worker_token is None:
        c.add("WORKER_TOKEN_POOL", "is not set (comma-separated worker bot tokens)")
    for i, token in enumerate(pool):
        if not _looks_like_token(token):
            c.add("WORKER_TOKEN_POOL",
                  f"entry {i + 1} does not look like a bot token (123456:ABC...)")
    if len(set(pool)) != len(pool):
        c.add("WORKER_TOKEN_POOL", "lists the same token twice")
    if master and master in pool:
        c.add("WORKER_TOKEN_POOL", "contains MASTER_BOT_TOKEN; each bot needs its own")

    allowed = c.get(lambda: _allowed_users(env), frozenset())
    engine = EngineKind.CHAT
    engine_raw = env.get("WORKER_ENGINE", "").strip().lower() or "chat"
    try:
        engine = EngineKind(engine_raw)
    except ValueError:
        c.add("WORKER_ENGINE", f"must be 'chat' or 'agent', got {engine_raw!r}")
    oauth = env.get("CLAUDE_CODE_OAUTH_TOKEN", "").strip() or None
    if engine == EngineKind.AGENT and oauth and not env.get("ANTHROPIC_API_KEY", "").strip():
        api_key = ""  # Claude Code on a subscription: the CLI authenticates with the token
    elif not need_claude:  # the master and the operator never call Claude
        api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    else:
        api_key = c.get(lambda: _required(
            env, "ANTHROPIC_API_KEY",
            "your Anthropic API key (agent mode also takes CLAUDE_CODE_OAUTH_TOKEN)"), "")
    if oauth and engine != EngineKind.AGENT:
        c.add("CLAUDE_CODE_OAUTH_TOKEN", "is used by WORKER_ENGINE=agent only; "
                                         "the chat engine needs ANTHROPIC_API_KEY")
    agent = _agent_settings(env, c)
    budgets = _budget_settings(env, c, allowed)
    if engine == EngineKind.AGENT and need_workers:  # the master and operator run no agent
        _check_agent_installed(agent, c)

    min_workers = c.get(lambda: _int(env, "MIN_WORKERS", 1, minimum=0), 1)
    max_workers = c.get(lambda: _int(env, "MAX_WORKERS", 5, minimum=1), 5)
    if min_workers > max_workers:
        c.add("MIN_WORKERS", f"({min_workers}) exceeds MAX_WORKERS ({max_workers})")
    elif need_workers and pool and min_workers > len(pool):
        c.add("MIN_WORKERS", f"({min_workers}) exceeds the number of worker tokens in "
                             f"WORKER_TOKEN_POOL ({len(pool)})")

    database_url = env.get("DATABASE_URL", "").strip() or "sqlite:///fleetgram.sqlite3"
    if not database_url.startswith(("sqlite:", "postgresql://", "postgres://")):
        c.add("DATABASE_URL", "must start with sqlite:/// or postgresql:// (got another scheme)")

    telegram_api_url = env.get("TELEGRAM_API_URL", "").strip() or "https://api.telegram.org"
    if not telegram_api_url.startswith(("http://", "https://")):
        c.add("TELEGRAM_API_URL", "must be an http(s) URL")

    anthropic_base_url = env.get("ANTHROPIC_BASE_URL", "").strip() or None
    if anthropic_base_url is not None and not anthropic_base_url.startswith(
        ("http://", "https://")
    ):
        c.add("ANTHROPIC_BASE_URL", "must be an http(s) URL")

    transcribe = _transcribe_settings(env, c)
    token_key = _token_key(env, c)

    mode_raw = env.get("FLEETGRAM_MODE", "").strip().lower() or "single"
    mode = Mode.SINGLE
    try:
        mode = Mode(mode_raw)
    except ValueError:
        c.add("FLEETGRAM_MODE", "must be 'single' or 'kubernetes'")

    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        c.add("LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")
        level = "INFO"

    lease = c.get(lambda: _float(env, "WORKER_LEASE_SECONDS", 30.0, minimum=1.0), 30.0)
    heartbeat = c.get(
        lambda: _float(env, "HEARTBEAT_INTERVAL", min(5.0, lease / 3), minimum=0.05),
        min(5.0, lease / 3),
    )
    if heartbeat >= lease:
        c.add("HEARTBEAT_INTERVAL", "must be shorter than WORKER_LEASE_SECONDS")

    claude_timeout = c.get(lambda: _float(env, "CLAUDE_TIMEOUT", 600.0, minimum=1.0), 600.0)
    stall = c.get(lambda: _float(env, "CLAUDE_STALL_TIMEOUT", 60.0, minimum=1.0), 60.0)
    compact_at = c.get(lambda: _float(env, "COMPACT_AT", 0.8, minimum=0.1,
                                           what="a fraction such as 0.8"), 0.8)
    if compact_at >= 1.0:
        c.add("COMPACT_AT", f"must be a fraction of the context window below 1, got {compact_at}")

    settings = dict(
        claude_max_tokens=c.get(
            lambda: _int(env, "CLAUDE_MAX_TOKENS", 4096, minimum=1, maximum=128000), 4096),
        claude_timeout=claude_timeout,
        claude_max_retries=c.get(
            lambda: _int(env, "CLAUDE_MAX_RETRIES", 4, minimum=0, maximum=20), 4),
        claude_stall_timeout=stall,
        claude_context_window=c.get(
            lambda: _int(env, "CLAUDE_CONTEXT_WINDOW", 200_000, minimum=1000), 200_000),
        compact_at=compact_at,
        scale_up_threshold=c.get(lambda: _int(env, "SCALE_UP_THRESHOLD", 3, minimum=0), 3),
        scale_down_delay=c.get(lambda: _float(env, "SCALE_DOWN_DELAY", 60.0), 60.0),
        max_attempts=c.get(lambda: _int(env, "MAX_ATTEMPTS", 3, minimum=1), 3),
        poll_interval=c.get(lambda: _float(env, "POLL_INTERVAL", 0.5, minimum=0.01), 0.5),
        stream_edit_interval=c.get(
            lambda: _float(env, "STREAM_EDIT_INTERVAL", 1.0, minimum=0.05), 1.0),
        stream_drafts=c.get(lambda: _switch(env, "STREAM_DRAFTS", True), True),
        max_pending_per_user=c.get(lambda: _int(env, "MAX_PENDING_PER_USER", 20, minimum=1), 20),
        prompts_per_minute=c.get(lambda: _int(env, "PROMPTS_PER_MINUTE", 20, minimum=1), 20),
        retention_days=c.get(lambda: _float(env, "RETENTION_DAYS", 30.0, minimum=0.01,
                                              what="a number of days"), 30.0),
        paste_merge_window=c.get(lambda: _float(env, "PASTE_MERGE_WINDOW", 1.5), 1.5),
        stopped_worker_poll=c.get(
            lambda: _float(env, "STOPPED_WORKER_POLL", 5.0, minimum=0.05), 5.0),
        metrics_port=c.get(lambda: _int(env, "METRICS_PORT", 0, minimum=0, maximum=65535), 0),
        health_port=c.get(
            lambda: _int(env, "HEALTH_PORT", 8081, minimum=0, maximum=65535), 8081),
    )
    if c.errors:
        raise ConfigErrors(c.errors)

    return Settings(
        master_bot_token=master,
        worker_token_pool=pool,
        allowed_user_ids=allowed,
        anthropic_api_key=api_key,
        anthropic_base_url=anthropic_base_url,
        claude_model=env.get("CLAUDE_MODEL", "").strip() or DEFAULT_MODEL,
        claude_system_prompt=env.get("CLAUDE_SYSTEM_PROMPT", "").strip() or DEFAULT_SYSTEM_PROMPT,
        min_workers=min_workers,
        max_workers=max_workers,
        worker_lease_seconds=lease,
        heartbeat_interval=heartbeat,
        database_url=database_url,
        telegram_api_url=telegram_api_url,
        mode=mode,
        namespace=env.get("FLEETGRAM_NAMESPACE", "").strip() or "default",
        log_level=level,
        worker_token=worker_token,
        pool_name=env.get("FLEETGRAM_POOL", "").strip() or "fleetgram",
        worker_engine=engine,
        claude_code_oauth_token=oauth,
        **agent,  # type: ignore[arg-type]
        **transcribe,  # type: ignore[arg-type]
        **budgets,  # type: ignore[arg-type]
        **settings,  # type: ignore[arg-type]
        token_encryption_key=token_key,
    )


def _token_key(env: Mapping[str, str], c: _Collector) -> str | None:
    """TOKEN_ENCRYPTION_KEY: a Fernet key (32 url-safe base64-encoded bytes), or unset."""
    from fleetgram import tokens

    raw = env.get(tokens.KEY_SETTING, "").strip()
    problem = tokens.key_problem(raw) if raw else None
    if problem:
        c.add(tokens.KEY_SETTING, problem)
    return raw or None


def _transcribe_settings(env: Mapping[str, str], c: _Collector) -> dict[str, object]:
    """TRANSCRIBE_*: voice notes are transcribed when TRANSCRIBE_URL is set."""
    url = env.get("TRANSCRIBE_URL", "").strip() or None
    key = env.get("TRANSCRIBE_API_KEY", "").strip() or None
    if url is not None and not url.startswith(("http://", "https://")):
        c.add("TRANSCRIBE_URL", "must be an http(s) URL (the base of /v1/audio/transcriptions)")
    if key is not None and url is None:
        c.add("TRANSCRIBE_API_KEY", "is set but TRANSCRIBE_URL is not; set both to transcribe "
                                    "voice notes")
    return dict(
        transcribe_url=url,
        transcribe_api_key=key,
        transcribe_model=env.get("TRANSCRIBE_MODEL", "").strip() or "whisper-1",
        transcribe_timeout=c.get(
            lambda: _float(env, "TRANSCRIBE_TIMEOUT", 60.0, minimum=1.0), 60.0),
    )


def _check_agent_installed(agent: Mapping[str, object], c: _Collector) -> None:
    """Agent mode needs the `agent` extra (the SDK and its bundled CLI) and, with a repo, git."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("claude_agent_sdk") is None:
        c.add("WORKER_ENGINE", "agent needs the agent extra: pip install 'fleetgram[agent]'")
    else:
        import sys

        beside = Path(sys.executable).parent / "fleetgram-agent-cli"
        if not beside.exists() and shutil.which("fleetgram-agent-cli") is None:
            c.add("WORKER_ENGINE", "agent needs the fleetgram-agent-cli launcher: reinstall "
                                   "fleetgram with pip install 'fleetgram[agent]'")
    if agent.get("workspace_repo") is not None and shutil.which("git") is None:
        c.add("WORKSPACE_REPO", "needs git on PATH (each worker clones the repository)")


def _agent_settings(env: Mapping[str, str], c: _Collector) -> dict[str, object]:
    """The agent-mode settings (validated whatever the engine, so a typo shows at once)."""
    data_dir = Path(env.get("DATA_DIR", "").strip() or "fleetgram-data")
    root_raw = env.get("WORKSPACE_ROOT", "").strip()
    root = Path(root_raw) if root_raw else data_dir / "workspaces"
    repo = env.get("WORKSPACE_REPO", "").strip() or None
    if repo is not None and "://" not in repo and not repo.startswith("git@"):
        if not Path(repo).exists():
            c.add("WORKSPACE_REPO", f"{repo!r} is neither a git URL nor an existing path")
    mode = PermissionMode.ASK
    mode_raw = env.get("PERMISSION_MODE", "").strip().lower() or "ask"
    try:
        mode = PermissionMode(mode_raw)
    except ValueError:
        c.add("PERMISSION_MODE", f"must be ask, edits, all or plan, got {mode_raw!r}")
    budget_raw = env.get("TASK_BUDGET_USD", "").strip()
    budget = c.get(lambda: _float(env, "TASK_BUDGET_USD", 0.0, minimum=0.0001,
                                  what="an amount in US dollars such as 2.50"),
                   None) if budget_raw else None
    turns_raw = env.get("TASK_MAX_TURNS", "").strip()
    turns = c.get(lambda: _int(env, "TASK_MAX_TURNS", 0, minimum=1),
                  None) if turns_raw else None
    sandbox_raw = env.get("AGENT_SANDBOX", "").strip().lower() or "0"
    if sandbox_raw not in {"0", "1", "true", "false", "yes", "no"}:
        c.add("AGENT_SANDBOX", "must be 1 or 0")
    credentials_raw = env.get("WORKSPACE_GIT_CREDENTIALS", "").strip()
    credentials = Path(credentials_raw) if credentials_raw else None
    if credentials is not None and not credentials.is_dir():
        c.add("WORKSPACE_GIT_CREDENTIALS", f"{credentials_raw!r} is not a directory")
    relay = env.get("AGENT_RELAY", "").strip() or None
    if relay is not None:
        host, _, port = relay.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            c.add("AGENT_RELAY", f"must be host:port, got {relay!r}")
    return dict(
        data_dir=data_dir,
        agent_relay=relay,
        workspace_git_credentials=credentials,
        workspace_root=root,
        workspace_repo=repo,
        permission_mode=mode,
        approval_timeout=c.get(
            lambda: _float(env, "APPROVAL_TIMEOUT", 600.0, minimum=1.0), 600.0),
        task_budget_usd=budget,
        task_max_turns=turns,
        agent_verbose=c.get(lambda: _int(env, "AGENT_VERBOSE", 1, minimum=0, maximum=2), 1),
        agent_sandbox=sandbox_raw in {"1", "true", "yes"},
        agent_cli_path=env.get("AGENT_CLI_PATH", "").strip() or None,
    )


def _budget_settings(env: Mapping[str, str], c: _Collector,
                     allowed: frozenset[int]) -> dict[str, object]:
    """USER_DAILY_BUDGET_USD, USER_BUDGETS_USD, ADMIN_USER_IDS and BUDGET_TIMEZONE."""
    from fleetgram import budget

    default: float | None = None
    default_raw = env.get("USER_DAILY_BUDGET_USD", "").strip()
    if default_raw:
        try:
            default = budget.parse_amount(default_raw, "the value")
        except ValueError:
            c.add("USER_DAILY_BUDGET_USD", "must be an amount in US dollars a day of at least "
                                           f"0, such as 5 or 0.50, got {default_raw!r}")
    overrides: dict[int, float | None] = {}
    try:
        overrides = budget.parse_user_budgets(env.get("USER_BUDGETS_USD", ""))
    except ValueError as exc:
        c.add("USER_BUDGETS_USD", f"{exc} (comma-separated user_id:dollars, e.g. 111:5,222:0.5)")
    strangers = sorted(set(overrides) - allowed) if allowed else []
    if strangers:
        c.add("USER_BUDGETS_USD", f"user(s) {', '.join(map(str, strangers))} are not in "
                                  "ALLOWED_USER_IDS")
    admins: set[int] = set()
    for part in (p.strip() for p in env.get("ADMIN_USER_IDS", "").split(",")):
        if not part:
            continue
        try:
            admins.add(int(part))
        except ValueError:
            c.add("ADMIN_USER_IDS", f"{part!r} is not a numeric user id")
    outsiders = sorted(admins - allowed) if allowed else []
    if outsiders:
        c.add("ADMIN_USER_IDS", f"user(s) {', '.join(map(str, outsiders))} are not in "
                                "ALLOWED_USER_IDS (an admin must be a served user)")
    timezone = env.get("BUDGET_TIMEZONE", "").strip() or "UTC"
    try:
        budget.zone(timezone)
    except ValueError as exc:
        c.add("BUDGET_TIMEZONE", str(exc))
        timezone = "UTC"
    return dict(user_daily_budget_usd=default, user_budgets_usd=overrides,
                admin_user_ids=frozenset(admins), budget_timezone=timezone)


def _allowed_users(env: Mapping[str, str]) -> frozenset[int]:
    allowed_raw = env.get("ALLOWED_USER_IDS", "").strip()
    if not allowed_raw:
        raise ConfigError(
            "ALLOWED_USER_IDS",
            "is not set: list the Telegram user ids to serve (comma-separated); "
            "fleetgram serves nobody without it",
        )
    allowed: set[int] = set()
    for part in allowed_raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            allowed.add(int(part))
        except ValueError:
            raise ConfigError("ALLOWED_USER_IDS", f"{part!r} is not a numeric user id") from None
    if not allowed:
        raise ConfigError(
            "ALLOWED_USER_IDS", "lists no user id; fleetgram serves nobody without one"
        )
    return frozenset(allowed)


def safe_database_url(url: str) -> str:
    """DATABASE_URL as it may be shown: without a password."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
