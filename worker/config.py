"""Settings: ``config.toml`` read with tomllib into frozen dataclasses.

Precedence, lowest to highest: built-in defaults, the config file, environment variables, flags.

* Environment variables are named ``LONGFORM_<SECTION>_<KEY>``, e.g. ``LONGFORM_WORKER_CONCURRENCY=16``
  or ``LONGFORM_QUEUE_URL=postgresql://…``.
* The SDK's own ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` work as users expect: the key is never
  stored in the config, and ``ANTHROPIC_BASE_URL`` applies when ``[anthropic] base_url`` is empty.
* Flags are ``--set section.key=value`` (any key) plus short forms such as ``--concurrency``.

Every problem (unknown section or key, wrong type, value out of range, unreadable file) raises one
``ConfigError`` naming the key and where it came from; the command line turns it into a message
and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.errors import ConfigError
from jobs.models import PROMPT_CACHE_MODES

__all__ = (
    "AnthropicSettings",
    "QueueSettings",
    "WorkerSettings",
    "RateLimitSettings",
    "LoggingSettings",
    "ServerSettings",
    "CostSettings",
    "Config",
    "load_config",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
)

DEFAULT_CONFIG_PATH = Path("config.toml")
ENV_PREFIX = "LONGFORM_"


@dataclass(frozen=True, slots=True)
class AnthropicSettings:
    #: API base URL; empty = ANTHROPIC_BASE_URL, else the SDK's default (the real API).
    base_url: str = ""
    #: Default model for jobs that name none.
    model: str = "claude-sonnet-5-5"
    #: Default output tokens per request.
    max_tokens: int = 8192
    #: Default total output tokens per document, across continuations past max_tokens.
    output_budget: int = 128_000
    #: Seconds to open a connection.
    connect_timeout: float = 10.0
    #: The SDK's HTTP transport: aiohttp (less CPU per streamed event) or httpx.
    http_transport: str = "aiohttp"


@dataclass(frozen=True, slots=True)
class QueueSettings:
    #: sqlite:///path.db (relative paths are relative to the config file) or postgresql://…
    url: str = "sqlite:///var/jobs.db"
    #: A worker that stops heartbeating loses its job after this many seconds (so a killed
    #: worker's jobs resume elsewhere within about this long; heartbeats come every third of it).
    lease_seconds: float = 10.0
    #: Default attempts per job before it is failed (the dead-letter).
    max_attempts: int = 8


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    #: Jobs streamed at once by one process.
    concurrency: int = 8
    #: Checkpoint a job once it has this many uncommitted characters ...
    checkpoint_chars: int = 2000
    #: ... or once its oldest uncommitted text is this old (seconds).
    checkpoint_seconds: float = 1.0
    #: A stream with no text for this long is treated as stalled, even while pings arrive.
    idle_timeout: float = 60.0
    #: First retry delay (seconds); doubles per failure, with jitter.
    backoff_base: float = 1.0
    #: Longest retry delay (seconds).
    backoff_max: float = 60.0
    #: A server's retry-after is honoured up to this many seconds.
    retry_after_max: float = 120.0
    #: On SIGINT/SIGTERM, running streams get this long to finish before they are checkpointed.
    grace_seconds: float = 10.0
    #: How often an idle worker looks for new jobs (seconds).
    poll_seconds: float = 1.0
    #: 429/529s may go on this long (seconds) before they start to use up the jobs' attempts.
    overload_patience: float = 1800.0
    #: The worker exits (code 1) once the job store has been unavailable this long (seconds).
    outage_limit: float = 300.0
    #: The longest any shutdown step (settling a job, the last checkpoint) may take (seconds).
    shutdown_deadline: float = 5.0
    #: Uncommitted text kept in memory while the store is down, over all jobs (characters).
    max_pending_chars: int = 50_000_000


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    #: Requests per minute for the whole fleet; 0 = unlimited.
    requests_per_minute: int = 0
    #: Input tokens per minute; 0 = unlimited.
    input_tokens_per_minute: int = 0
    #: Output tokens per minute; 0 = unlimited.
    output_tokens_per_minute: int = 0


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    #: auto (console on a TTY, JSON lines otherwise), console, or json.
    format: str = "auto"
    #: debug, info, warning or error.
    level: str = "info"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``python -m worker serve``: the HTTP API and the live relay."""

    #: Interface to bind; localhost unless you mean to expose it (put nginx in front: deploy/).
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer token every route but /healthz requires (also LONGFORM_SERVER_TOKEN). Empty: one is
    #: generated at first start, stored with mode 0600 next to the queue, and printed once.
    token: str = ""
    #: Seconds between ``: heartbeat`` comments on an idle event stream (proxies drop idle ones).
    heartbeat_seconds: float = 15.0
    #: A client that takes longer than this to accept one write is disconnected.
    send_timeout: float = 10.0
    #: Largest request body accepted, in bytes (413 above).
    max_body_bytes: int = 1_048_576
    #: The ``retry:`` (milliseconds) sent to event-stream clients.
    retry_ms: int = 2000
    #: With ``serve --workers``: jobs someone watches live are checkpointed this often (seconds)
    #: instead of ``[worker] checkpoint_seconds``, so their text reaches viewers in time.
    live_checkpoint_seconds: float = 0.1


@dataclass(frozen=True, slots=True)
class CostSettings:
    """Prices, prompt caching and budgets (``jobs.costs``, ``worker.caching``, ``worker.budget``)."""

    #: A TOML price file shaped like jobs/prices.toml whose rows override or extend the shipped
    #: ones (relative to the config file); empty = the shipped table only.
    prices_file: str = ""
    #: Prompt caching for jobs that do not choose: off, 5m or 1h (TTL of the breakpoints).
    prompt_cache: str = "5m"
    #: Default cost cap per job (USD), for jobs that set none; 0 = no cap.
    max_cost_usd: float = 0.0
    #: Stop a run once it has spent this much (USD); 0 = no cap. ``run --max-cost`` sets it.
    max_cost_per_run: float = 0.0
    #: The whole fleet's spending cap per UTC day (USD), held in the store; 0 = no cap.
    daily_cap_usd: float = 0.0
    #: Also cache the document so far, one block per request (on/off). Pays with several
    #: continuations per attempt (bench/economy); off until verified against the real API.
    cache_checkpoint: str = "off"


@dataclass(frozen=True, slots=True)
class Config:
    anthropic: AnthropicSettings = field(default_factory=AnthropicSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    costs: CostSettings = field(default_factory=CostSettings)
    #: The file the settings came from (None = built-in defaults only).
    source: Path | None = None

    def queue_url(self) -> str:
        """The queue URL with a relative SQLite path resolved against the config file's folder."""
        url = self.queue.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and self.source is not None:
            path = Path(url[len(prefix) :])
            if not path.is_absolute():
                return prefix + str((self.source.parent / path).resolve())
        return url

    def prices_path(self) -> Path | None:
        """``[costs] prices_file`` resolved against the config file's folder; None if unset."""
        if not self.costs.prices_file:
            return None
        path = Path(self.costs.prices_file)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def api_base_url(self) -> str | None:
        """The base URL to give the SDK, or None to let it use its own default."""
        return self.anthropic.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None


_SECTIONS: dict[str, type[Any]] = {
    "anthropic": AnthropicSettings,
    "queue": QueueSettings,
    "worker": WorkerSettings,
    "rate_limits": RateLimitSettings,
    "logging": LoggingSettings,
    "server": ServerSettings,
    "costs": CostSettings,
}

# (minimum, maximum) for numeric keys; None = unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "anthropic.max_tokens": (1, None),
    "anthropic.output_budget": (1, None),
    "anthropic.connect_timeout": (0.1, None),
    "queue.lease_seconds": (1, None),
    "queue.max_attempts": (1, None),
    "worker.concurrency": (1, 100_000),
    "worker.checkpoint_chars": (1, None),
    "worker.checkpoint_seconds": (0.01, None),
    "worker.idle_timeout": (0.1, None),
    "worker.backoff_base": (0, None),
    "worker.backoff_max": (0, None),
    "worker.retry_after_max": (0, None),
    "worker.grace_seconds": (0, None),
    "worker.poll_seconds": (0.01, None),
    "worker.overload_patience": (0, 7 * 86400),
    "worker.outage_limit": (1, 7 * 86400),
    "worker.shutdown_deadline": (0.1, 3600),
    "worker.max_pending_chars": (1000, None),
    "rate_limits.requests_per_minute": (0, None),
    "rate_limits.input_tokens_per_minute": (0, None),
    "rate_limits.output_tokens_per_minute": (0, None),
    "server.port": (0, 65535),
    "server.heartbeat_seconds": (0.01, None),
    "server.send_timeout": (0.01, None),
    "server.max_body_bytes": (1, None),
    "server.retry_ms": (0, None),
    "server.live_checkpoint_seconds": (0.01, None),
    "costs.max_cost_usd": (0, None),
    "costs.max_cost_per_run": (0, None),
    "costs.daily_cap_usd": (0, None),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "anthropic.http_transport": ("aiohttp", "httpx"),
    "logging.format": ("auto", "console", "json"),
    "logging.level": ("debug", "info", "warning", "error"),
    "costs.prompt_cache": PROMPT_CACHE_MODES,
    "costs.cache_checkpoint": ("off", "on"),
}


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Build the config from defaults, the file at ``path``, ``env`` and flag ``overrides``.

    ``path`` None means ``./config.toml`` if it exists, else defaults only; an explicit path that
    does not exist is an error. ``overrides`` maps ``section.key`` to the flag's text.
    """
    env = os.environ if env is None else env
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    values: dict[str, dict[str, tuple[Any, str]]] = {name: {} for name in _SECTIONS}
    source: Path | None = None

    if path.exists() or explicit:
        source = path.resolve()
        for section, key, value in _read_file(path):
            values[section][key] = (value, f"{path}: [{section}] {key}")

    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, key = _split_env_name(name)
        values[section][key] = (_parse_text(raw, section, key, name), f"environment variable {name}")

    for dotted, raw in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        where = f"flag --set {dotted}"
        _check_known(section, key, where)
        values[section][key] = (_parse_text(raw, section, key, where), where)

    sections = {name: _build(name, given) for name, given in values.items()}
    return Config(**sections, source=source)


def _read_file(path: Path) -> list[tuple[str, str, Any]]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    items: list[tuple[str, str, Any]] = []
    for section, table in data.items():
        if section == "schedules":
            continue  # read by the scheduler
        if section not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            _check_known(section, key, f"{path}: [{section}]")
            items.append((section, key, value))
    return items


def _check_known(section: str, key: str, where: str) -> None:
    cls = _SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"{where}: unknown section {section!r} (known: {', '.join(_SECTIONS)})")
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise ConfigError(f"{where}: unknown key {key!r} in [{section}] (known: {', '.join(names)})")


def _split_env_name(name: str) -> tuple[str, str]:
    rest = name[len(ENV_PREFIX) :].lower()
    for section in sorted(_SECTIONS, key=len, reverse=True):
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            _check_known(section, key, f"environment variable {name}")
            return section, key
    raise ConfigError(
        f"environment variable {name}: no such setting (use {ENV_PREFIX}<SECTION>_<KEY>, "
        f"sections: {', '.join(_SECTIONS)})"
    )


def _field_type(section: str, key: str) -> Any:
    return {f.name: f.type for f in dataclasses.fields(_SECTIONS[section])}[key]


def _parse_text(raw: str, section: str, key: str, where: str) -> Any:
    """Turn the text of an environment variable or flag into the key's type."""
    kind = _field_type(section, key)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{where}: {section}.{key} must be a {kind}, got {raw!r}") from None
    return raw


def _build(section: str, given: Mapping[str, tuple[Any, str]]) -> Any:
    cls = _SECTIONS[section]
    kwargs: dict[str, Any] = {}
    for key, (value, where) in given.items():
        kwargs[key] = _validate(section, key, value, where)
    return cls(**kwargs)


def _validate(section: str, key: str, value: Any, where: str) -> Any:
    kind = _field_type(section, key)
    dotted = f"{section}.{key}"
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: {dotted} must be a {kind}, got {type(value).__name__} {value!r}")
    if kind == "float":
        value = float(value)
    low, high = _RANGES.get(dotted, (None, None))
    if low is not None and value < low:
        raise ConfigError(f"{where}: {dotted} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{where}: {dotted} must be at most {high}, got {value}")
    choices = _CHOICES.get(dotted)
    if choices and value not in choices:
        raise ConfigError(f"{where}: {dotted} must be one of {', '.join(choices)}, got {value!r}")
    return value
