"""Settings: the only reader of os.environ. A missing required setting fails fast, all at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.domain.pricing import DEFAULT_PRICES, Prices
from core.domain.repos import RepoSpec, parse_repos
from core.errors import ConfigError

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_MODEL = "claude-sonnet-5-5"  # the current Sonnet (its price is in pricing.py)
MAX_CLAUDE_TIMEOUT = 300.0

# Which settings each process cannot start without.
REQUIRED = {
    "bot": ("SLACK_BOT_TOKEN",),
    "result": ("SLACK_BOT_TOKEN",),
    "pm": ("SLACK_BOT_TOKEN", "ANTHROPIC_API_KEY"),
    "task": ("ANTHROPIC_API_KEY",),
}


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    slack_api_url: str = DEFAULT_SLACK_API_URL
    anthropic_api_key: str = ""
    model: str = DEFAULT_MODEL
    amqp_url: str = DEFAULT_AMQP_URL
    data_dir: Path = Path(".aico")
    db_url: str = ""
    admins: frozenset[str] = field(default_factory=frozenset)
    alert_channel: str = ""
    min_workers: int = 1
    max_workers: int = 5
    pool: str = "local"  # local: the pm runs the task workers | external: a platform scaler does
    host_cpu_limit: float = 95.0  # percent: no scale-up on a host this busy (100: no guard)
    host_memory_limit: float = 90.0
    scale_down_after: float | None = None  # seconds a smaller pool must suffice; None: the policy's
    train_every: float = 10 * 60.0  # seconds between trainings of the arrival forecast
    check_every: float = 10.0  # seconds between two rounds of health checks
    canary_every: float = 120.0  # seconds between two canaries of the bot's Socket Mode socket
    canary_wait: float = 60.0  # seconds a canary may take to come back before the socket is mute
    stats_retention_days: float = 400.0  # days of statistics counters kept (0: all)
    port: int = 3000
    task_concurrency: int = 8
    result_concurrency: int = 8
    claude_timeout: float = 120.0
    max_tokens: int = 4096
    max_task_chars: int = 4000
    slack_channel_rate: float = 1.0  # posts a second per channel; 0: not paced
    slack_channel_burst: int = 5
    stale_after: float = 45 * 60.0  # seconds without news before a task counts as stranded
    sweep_every: float = 5 * 60.0
    prices: Prices = DEFAULT_PRICES  # USD per million tokens, by model
    budget_user_daily: float = 0.0  # USD a user may spend a day (UTC); 0: no limit
    budget_channel_daily: float = 0.0
    conversations: str = "requester"  # who may continue a task's thread: requester | channel
    log_level: str = "INFO"
    repos: tuple[RepoSpec, ...] = ()  # AICO_REPOS: where the workers draw context from
    # Tokens of private repositories by name (AICO_REPO_TOKEN_<NAME>, or AICO_REPOS_TOKEN for
    # all): given to git only, never shown.
    repo_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    repo_fetch_every: float = 5 * 60.0  # seconds between two fetches of the repositories
    context_tokens: int = 6000  # tokens of repository context a task's prompt may carry
    project_max_steps: int = 12  # steps a project's plan may have
    project_max_depth: int = 4  # the longest chain of steps needing each other
    project_parallel: int = 8  # steps of one project in flight at once
    project_max_usd: float = 5.0  # a project stops its queued steps once it has spent this
    project_confirm_usd: float = 1.0  # an estimate over this waits for the requester's Confirm
    max_file_mb: float = 10.0  # MB one file attached in Slack may have to go to Claude

    def repo(self, name: str) -> RepoSpec | None:
        return next((spec for spec in self.repos if spec.name == name), None)

    def repo_token(self, name: str) -> str:
        return dict(self.repo_tokens).get(name, "")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def drain_timeout(self) -> float:
        """How long a task worker may take to finish what it holds when it is told to stop: a
        task's three tries of Claude, and then some."""
        return 3 * self.claude_timeout + 30.0

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token)

    @property
    def db_path(self) -> Path:
        """The SQLite file of the event store (unused when AICO_DB_URL names PostgreSQL)."""
        if self.db_url.startswith("sqlite:///"):
            return Path(self.db_url.removeprefix("sqlite:///"))
        return self.data_dir / "aico.db"

    @classmethod
    def from_env(cls, role: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting; raise one ConfigError naming all that `role` is missing."""
        env = os.environ if env is None else env
        problems: list[str] = []
        settings = cls(
            slack_bot_token=env.get("SLACK_BOT_TOKEN", ""),
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
            slack_app_token=env.get("SLACK_APP_TOKEN", ""),
            slack_api_url=_with_slash(env.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL),
            anthropic_api_key=env.get("ANTHROPIC_API_KEY", ""),
            model=env.get("AICO_MODEL") or DEFAULT_MODEL,
            amqp_url=env.get("AICO_AMQP_URL") or DEFAULT_AMQP_URL,
            data_dir=Path(env.get("AICO_DATA_DIR") or ".aico"),
            db_url=env.get("AICO_DB_URL", ""),
            admins=frozenset(u.strip() for u in env.get("AICO_ADMINS", "").split(",") if u.strip()),
            alert_channel=env.get("AICO_ALERT_CHANNEL", ""),
            min_workers=_int(env, "AICO_MIN_WORKERS", 1, problems, minimum=0),
            max_workers=_int(env, "AICO_MAX_WORKERS", 5, problems, minimum=0),
            pool=(env.get("AICO_POOL") or "local").strip().lower(),
            host_cpu_limit=_float(env, "AICO_HOST_CPU_LIMIT", 95.0, problems),
            host_memory_limit=_float(env, "AICO_HOST_MEMORY_LIMIT", 90.0, problems),
            scale_down_after=(
                _float(env, "AICO_SCALE_DOWN_AFTER", 0.0, problems, zero=True)
                if env.get("AICO_SCALE_DOWN_AFTER", "").strip()
                else None
            ),
            train_every=_float(env, "AICO_TRAIN_EVERY", 10 * 60.0, problems),
            check_every=_float(env, "AICO_CHECK_EVERY", 10.0, problems),
            canary_every=_float(env, "AICO_CANARY_EVERY", 120.0, problems),
            canary_wait=_float(env, "AICO_CANARY_WAIT", 60.0, problems),
            stats_retention_days=_float(
                env, "AICO_STATS_RETENTION_DAYS", 400.0, problems, zero=True
            ),
            port=_int(env, "PORT", 3000, problems, minimum=0),
            task_concurrency=_int(env, "AICO_TASK_CONCURRENCY", 8, problems, minimum=1),
            result_concurrency=_int(env, "AICO_RESULT_CONCURRENCY", 8, problems, minimum=1),
            claude_timeout=_float(env, "AICO_CLAUDE_TIMEOUT", 120.0, problems),
            max_tokens=_int(env, "AICO_MAX_TOKENS", 4096, problems, minimum=1),
            max_task_chars=_int(env, "AICO_MAX_TASK_CHARS", 4000, problems, minimum=1),
            slack_channel_rate=_float(env, "AICO_SLACK_CHANNEL_RATE", 1.0, problems, zero=True),
            slack_channel_burst=_int(env, "AICO_SLACK_CHANNEL_BURST", 5, problems, minimum=1),
            stale_after=_float(env, "AICO_STALE_AFTER", 45 * 60.0, problems),
            sweep_every=_float(env, "AICO_SWEEP_EVERY", 5 * 60.0, problems),
            prices=_prices(env, problems),
            budget_user_daily=_float(env, "AICO_BUDGET_USER_DAILY", 0.0, problems, zero=True),
            budget_channel_daily=_float(env, "AICO_BUDGET_CHANNEL_DAILY", 0.0, problems, zero=True),
            conversations=(env.get("AICO_CONVERSATIONS") or "requester").strip().lower(),
            log_level=(env.get("AICO_LOG_LEVEL") or "INFO").upper(),
            repos=_repos(env, problems),
            repo_fetch_every=_float(env, "AICO_REPO_FETCH_EVERY", 5 * 60.0, problems),
            context_tokens=_int(env, "AICO_CONTEXT_TOKENS", 6000, problems, minimum=0),
            project_max_steps=_int(env, "AICO_PROJECT_MAX_STEPS", 12, problems, minimum=1),
            project_max_depth=_int(env, "AICO_PROJECT_MAX_DEPTH", 4, problems, minimum=1),
            project_parallel=_int(env, "AICO_PROJECT_PARALLEL", 8, problems, minimum=1),
            project_max_usd=_float(env, "AICO_PROJECT_MAX_USD", 5.0, problems),
            project_confirm_usd=_float(env, "AICO_PROJECT_CONFIRM_USD", 1.0, problems, zero=True),
            max_file_mb=_float(env, "AICO_MAX_FILE_MB", 10.0, problems),
        )
        settings = replace(settings, repo_tokens=_repo_tokens(env, settings.repos))
        problems[:0] = [f"{name} is required" for name in settings.missing(role)]
        if settings.db_url and not settings.db_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):  # the URL may hold a password: the message does not repeat it
            problems.append(
                "AICO_DB_URL must be sqlite:///<path> (one host) or "
                "postgresql://user:pass@host:5432/db (postgres:// works too)"
            )
        if settings.pool not in ("local", "external"):
            problems.append("AICO_POOL must be local (the pm runs the task workers) or external")
        if settings.conversations not in ("requester", "channel"):
            problems.append("AICO_CONVERSATIONS must be requester or channel")
        if not settings.amqp_url.startswith(("amqp://", "amqps://")):
            problems.append("AICO_AMQP_URL must start with amqp:// or amqps://")
        if settings.claude_timeout > MAX_CLAUDE_TIMEOUT:
            problems.append(
                f"AICO_CLAUDE_TIMEOUT must be at most {MAX_CLAUDE_TIMEOUT:.0f} s, so that a task's "
                "attempt (3 tries) ends well before RabbitMQ's 30-minute consumer_timeout"
            )
        if settings.min_workers > settings.max_workers:
            problems.append("AICO_MIN_WORKERS must not exceed AICO_MAX_WORKERS")
        if problems:
            who = f"aico {role}" if role else "aico"
            raise ConfigError(f"{who} cannot start: " + "; ".join(problems))
        return settings

    def missing(self, role: str | None) -> list[str]:
        names = list(REQUIRED.get(role or "", ()))
        if role == "pm" and self.pool == "external":  # it starts no task worker
            names.remove("ANTHROPIC_API_KEY")
        if role == "bot" and not self.socket_mode:
            names.append("SLACK_SIGNING_SECRET")
        values = {
            "SLACK_BOT_TOKEN": self.slack_bot_token,
            "SLACK_SIGNING_SECRET": self.slack_signing_secret,
            "ANTHROPIC_API_KEY": self.anthropic_api_key,
        }
        return [name for name in names if not values[name]]


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _repos(env: Mapping[str, str], problems: list[str]) -> tuple[RepoSpec, ...]:
    try:
        return tuple(parse_repos(env.get("AICO_REPOS", "")))
    except ValueError as exc:
        problems.append(str(exc))
        return ()


def _repo_tokens(
    env: Mapping[str, str], repos: tuple[RepoSpec, ...]
) -> tuple[tuple[str, str], ...]:
    shared = env.get("AICO_REPOS_TOKEN", "").strip()
    tokens = ((spec.name, env.get(spec.token_variable, "").strip() or shared) for spec in repos)
    return tuple((name, token) for name, token in tokens if token)


def _prices(env: Mapping[str, str], problems: list[str]) -> Prices:
    """The default prices, with AICO_PRICES's entries added or overriding."""
    try:
        return DEFAULT_PRICES | Prices.parse(env.get("AICO_PRICES", ""))
    except ValueError as exc:
        problems.append(f"AICO_PRICES: {exc}")
        return DEFAULT_PRICES


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str], minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {raw!r}")
        return default
    if value < minimum:
        problems.append(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, problems: list[str], zero: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number, got {raw!r}")
        return default
    if value < 0 or (value == 0 and not zero):
        problems.append(f"{name} must be {'0 or more' if zero else 'positive'}, got {raw}")
    return value
