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
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jobs.buckets import Limits
from jobs.classes import ModelClass, valid_class_name
from jobs.errors import ConfigError
from jobs.models import JOB_MODES, PROMPT_CACHE_MODES
from worker.config_types import Mismatch, declared_types, from_text, from_toml, is_number

if TYPE_CHECKING:
    from jobs.jsonl import JobDefaults

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
    "read_toml",
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
    #: The longest one request may stream, whatever it sends (0 = no limit): beside the idle
    #: watchdog, which only catches silence. A request cut by it is retried from its checkpoint.
    request_timeout: float = 0.0
    #: The SDK's HTTP transport: aiohttp (less CPU per streamed event) or httpx.
    http_transport: str = "aiohttp"
    #: Batch-mode jobs of the models that have it may ask up to 300K output tokens per request
    #: (the Batch API's beta ``output-300k-2026-03-24``; streaming stays at the model's 128K).
    batch_output_300k: bool = False


@dataclass(frozen=True, slots=True)
class QueueSettings:
    #: sqlite:///path.db (relative paths are relative to the config file) or postgresql://…
    url: str = "sqlite:///var/jobs.db"
    #: A worker that stops heartbeating loses its job after this many seconds (so a killed
    #: worker's jobs resume elsewhere within about this long; heartbeats come every third of it).
    lease_seconds: float = 10.0
    #: Default attempts per job before it is failed (the dead-letter).
    max_attempts: int = 8
    #: Default job mode: ``stream``, ``batch`` (Message Batches at half the price; results
    #: within 24 h, usually within the hour: ``worker.batches``), or ``auto`` (batch when the
    #: job's deadline is at least ``batch_horizon`` away, else stream).
    default_mode: str = "stream"
    #: How long a batch may take (seconds; the API's expiry is 24 h): a ``batch`` or ``auto`` job
    #: whose deadline is nearer streams, at enqueue and before each batch round
    #: (``jobs.batches.route``).
    batch_horizon: float = 86400.0
    #: ``run`` (and ``serve --workers``) deletes finished jobs that ended longer ago than this
    #: (``30d``, ``12h``: see ``worker.retention``), checking every few minutes; empty = keep
    #: every job (``prune`` by hand).
    retention: str = ""

    def retention_seconds(self) -> float | None:
        """``retention`` in seconds, or None when it is off (checked when the config is loaded)."""
        from worker.retention import parse_duration

        return parse_duration(self.retention, "queue.retention") if self.retention else None


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
    #: After this many failed attempts, a job continues with non-streaming requests (0 = never).
    nonstream_after: int = 0
    #: Characters of thinking kept per job (``show --thinking``); past it, the first part is kept.
    thinking_max_chars: int = 200_000
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
    #: ``run`` serves this process's Prometheus metrics at http://metrics_host:metrics_port/metrics;
    #: 0 = off. No token: bind it to localhost (the default) or a private interface.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: The batch submitter (one per fleet, inside ``run``) polls open batches at most this far
    #: apart (seconds), and sooner while results arrive.
    batch_poll_max: float = 30.0


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    #: Requests per minute for the whole fleet; 0 = unlimited.
    requests_per_minute: int = 0
    #: Input tokens per minute; 0 = unlimited.
    input_tokens_per_minute: int = 0
    #: Output tokens per minute; 0 = unlimited.
    output_tokens_per_minute: int = 0
    #: Limits per model class (``[rate_limits.classes.<name>]`` tables, config file only); the
    #: values above are the default class, for models no class matches.
    classes: tuple[ModelClass, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    #: auto (console on a TTY, JSON lines otherwise), console, or json.
    format: str = "auto"
    #: debug, info, warning or error.
    level: str = "info"
    #: The SDK's own loggers: auto (warning; info when level is debug), warning, info, or debug,
    #: which logs every request's options, prompt text included (ANTHROPIC_LOG alone does not).
    sdk_level: str = "auto"


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
    #: ``GET /metrics`` needs the bearer token (``token``, the default) like every other route, or
    #: answers without one (``none``: for a scraper that cannot send one; the figures are counts
    #: and ages, never a prompt, a job id or the token).
    metrics_auth: str = "token"


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

    def job_defaults(self) -> JobDefaults:
        """The defaults a job that leaves fields out is given at enqueue (``jobs.jsonl``)."""
        from jobs.jsonl import JobDefaults

        return JobDefaults(
            model=self.anthropic.model,
            max_tokens=self.anthropic.max_tokens,
            output_budget=self.anthropic.output_budget,
            max_attempts=self.queue.max_attempts,
            max_cost_usd=self.costs.max_cost_usd,
            prompt_cache=self.costs.prompt_cache,
            mode=self.queue.default_mode,
            batch_horizon=self.queue.batch_horizon,
        )

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

# (minimum, maximum) for numeric keys: every duration and size has both ends, so a typo (an extra
# digit, milliseconds for seconds) stops start-up instead of a worker that never wakes up.
_DAY = 86_400.0
_RANGES: dict[str, tuple[float, float]] = {
    "anthropic.max_tokens": (1, 1_000_000),
    "anthropic.output_budget": (1, 100_000_000),
    "anthropic.connect_timeout": (0.1, 600),
    "queue.lease_seconds": (1, _DAY),
    "queue.max_attempts": (1, 1000),
    "worker.concurrency": (1, 100_000),
    "worker.checkpoint_chars": (1, 100_000_000),
    "worker.checkpoint_seconds": (0.01, 3600),
    "worker.idle_timeout": (0.1, _DAY),
    "anthropic.request_timeout": (0.0, _DAY),
    "worker.backoff_base": (0, _DAY),
    "worker.backoff_max": (0, _DAY),
    "worker.retry_after_max": (0, _DAY),
    "worker.nonstream_after": (0, 1000),
    "worker.thinking_max_chars": (0, 100_000_000),
    "worker.grace_seconds": (0, _DAY),
    "worker.poll_seconds": (0.01, 3600),
    "worker.overload_patience": (0, 7 * 86400),
    "worker.outage_limit": (1, 7 * 86400),
    "worker.shutdown_deadline": (0.1, 3600),
    "worker.max_pending_chars": (1000, 10**10),
    "worker.metrics_port": (0, 65535),
    "worker.batch_poll_max": (0.01, 3600),
    "queue.batch_horizon": (0, 30 * _DAY),
    "rate_limits.requests_per_minute": (0, 10**9),
    "rate_limits.input_tokens_per_minute": (0, 10**12),
    "rate_limits.output_tokens_per_minute": (0, 10**12),
    "server.port": (0, 65535),
    "server.heartbeat_seconds": (0.01, 3600),
    "server.send_timeout": (0.01, 3600),
    "server.max_body_bytes": (1, 2**31),
    "server.retry_ms": (0, 86_400_000),
    "server.live_checkpoint_seconds": (0.01, 3600),
    "costs.max_cost_usd": (0, 1_000_000),
    "costs.max_cost_per_run": (0, 1_000_000_000),
    "costs.daily_cap_usd": (0, 1_000_000_000),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "anthropic.http_transport": ("aiohttp", "httpx"),
    "logging.format": ("auto", "console", "json"),
    "logging.level": ("debug", "info", "warning", "error"),
    "logging.sdk_level": ("auto", "warning", "info", "debug"),
    "costs.prompt_cache": PROMPT_CACHE_MODES,
    "queue.default_mode": (*JOB_MODES, "auto"),
    "costs.cache_checkpoint": ("off", "on"),
    "server.metrics_auth": ("token", "none"),
}


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | tuple[str, str]] | None = None,
) -> Config:
    """Build the config from defaults, the file at ``path``, ``env`` and flag ``overrides``.

    ``path`` None means ``./config.toml`` if it exists, else defaults only; an explicit path that
    does not exist is an error. ``overrides`` maps ``section.key`` to the flag's text, or to
    (text, the flag to name in messages) when it came from a short form such as ``--concurrency``.
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
        _check_file_only(section, key, name)
        values[section][key] = (_parse_text(raw, section, key, name), f"environment variable {name}")

    for dotted, given in (overrides or {}).items():
        raw, where = given if isinstance(given, tuple) else (given, f"flag --set {dotted}")
        section, _, key = dotted.partition(".")
        _check_known(section, key, where)
        _check_file_only(section, key, where)
        values[section][key] = (_parse_text(raw, section, key, where), where)

    sections = {name: _build(name, given) for name, given in values.items()}
    config = Config(**sections, source=source)
    _check_together(config, values)
    sdk_base_url = env.get("ANTHROPIC_BASE_URL", "")
    if not config.anthropic.base_url and (problem := _base_url_problem(sdk_base_url)):
        raise ConfigError(f"environment variable ANTHROPIC_BASE_URL {problem}, got {sdk_base_url!r}")
    return config


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; every problem is a ``ConfigError`` naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        # A byte-order mark (Windows editors add one) is not TOML, but its meaning is not in doubt.
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _read_file(path: Path) -> list[tuple[str, str, Any]]:
    data = read_toml(path)
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


def _check_file_only(section: str, key: str, where: str) -> None:
    if (section, key) == ("rate_limits", "classes"):
        raise ConfigError(f"{where}: rate_limits.classes can only be set in the config file")


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
    return declared_types(_SECTIONS[section])[key]


def _parse_text(raw: str, section: str, key: str, where: str) -> Any:
    """Turn the text of an environment variable or flag into the key's declared type."""
    kind = _field_type(section, key)
    try:
        return from_text(kind, raw)
    except Mismatch as exc:
        raise ConfigError(f"{where}: {section}.{key} must be {exc}, got {raw!r}") from None


def _build(section: str, given: Mapping[str, tuple[Any, str]]) -> Any:
    cls = _SECTIONS[section]
    kwargs: dict[str, Any] = {}
    for key, (value, where) in given.items():
        if (section, key) == ("rate_limits", "classes"):
            kwargs[key] = _model_classes(value, where)
            continue
        kwargs[key] = _validate(section, key, value, where)
    return cls(**kwargs)


_LIMIT_KEYS = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")


def _model_classes(value: Any, where: str) -> tuple[ModelClass, ...]:
    """``[rate_limits.classes.<name>]`` tables: ``match`` (a glob or a list of them) and the
    three per-minute limits (0 or missing = unlimited), in the order written."""
    if isinstance(value, str):
        raise ConfigError(f"{where}: rate_limits.classes can only be set in the config file")
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: rate_limits.classes must be a table of tables, got {_kind(value)}")
    origin = where.removesuffix(": [rate_limits] classes")
    return tuple(_model_class(name, table, origin) for name, table in value.items())


def _model_class(name: str, table: Any, where: str) -> ModelClass:
    here = f"{where}: [rate_limits.classes.{name}]"
    if not valid_class_name(name):
        raise ConfigError(
            f"{here}: a class name is 1-40 lower-case letters, digits, - or _ (and not 'default')"
        )
    if not isinstance(table, dict):
        raise ConfigError(f"{here} must be a table, got {_kind(table)}")
    known = ("match", *_LIMIT_KEYS)
    for key in table:
        if key not in known:
            raise ConfigError(f"{here}: unknown key {key!r} (known: {', '.join(known)})")
    patterns = table.get("match")
    if isinstance(patterns, str):
        patterns = [patterns]
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) and p.strip() and " " not in p for p in patterns)
    ):
        raise ConfigError(
            f'{here}: match must be a glob over model ids (e.g. "claude-opus-*") or a list of '
            f"them, got {patterns!r}"
        )
    limits = []
    for key in _LIMIT_KEYS:
        limit = table.get(key, 0)
        low, high = _RANGES[f"rate_limits.{key}"]
        if not isinstance(limit, int) or isinstance(limit, bool) or not low <= limit <= high:
            raise ConfigError(f"{here}: {key} must be an integer from {low:g} to {high:g}, got {limit!r}")
        limits.append(limit)
    return ModelClass(name, tuple(patterns), Limits(*limits))


def _validate(section: str, key: str, value: Any, where: str) -> Any:
    """``value`` checked against the key's declared type, then its range, text rule and choices."""
    dotted = f"{section}.{key}"
    try:
        value = from_toml(_field_type(section, key), value)
    except Mismatch as exc:
        raise ConfigError(f"{where}: {dotted} must be {exc}, got {_kind(value)} {value!r}") from None
    if isinstance(value, str):
        problem = _STRING_CHECKS.get(dotted, _no_problem)(value)
        if problem:
            raise ConfigError(f"{where}: {dotted} {problem}, got {value!r}")
    elif is_number(value):
        value = _in_range(dotted, value, where)
    choices = _CHOICES.get(dotted)
    if choices and value not in choices:
        raise ConfigError(f"{where}: {dotted} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _in_range(dotted: str, value: float, where: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {dotted} must be a finite number, got {value}")
    low, high = _RANGES.get(dotted, (-math.inf, math.inf))
    if value < low:
        raise ConfigError(f"{where}: {dotted} must be at least {low:g}, got {value:g}")
    if value > high:
        raise ConfigError(f"{where}: {dotted} must be at most {high:g}, got {value:g}")
    return value


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", float: "a number", int: "an integer"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _no_problem(value: str) -> str | None:
    return None


def _model_problem(value: str) -> str | None:
    if not value.strip():
        return "must name a model (e.g. claude-sonnet-5-5)"
    return "must not contain spaces" if value != value.strip() or " " in value else None


def _queue_url_problem(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "needs a scheme: sqlite:///path/to/jobs.db or postgresql://host/db"
    if scheme == "sqlite" and (not rest.startswith("/") or rest == "/"):
        return "needs three slashes and a path: sqlite:///relative.db or sqlite:////absolute.db"
    if scheme not in ("sqlite", "postgresql", "postgres"):
        return f"has scheme {scheme!r}: use sqlite:// or postgresql://"
    return None


def _base_url_problem(value: str) -> str | None:
    """The SDK joins ``/v1/messages`` to the base URL, so a ``/v1`` suffix asks for /v1/v1/…"""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, e.g. https://api.anthropic.com"
    if parts.path.rstrip("/").endswith("/v1"):
        return "must not end in /v1 (the SDK adds /v1/messages itself)"
    return None


def _retention_problem(value: str) -> str | None:
    if not value:
        return None  # off
    from worker.retention import duration_problem

    return duration_problem(value)


_STRING_CHECKS = {
    "anthropic.model": _model_problem,
    "anthropic.base_url": _base_url_problem,
    "queue.url": _queue_url_problem,
    "queue.retention": _retention_problem,
}


def _check_together(config: Config, values: Mapping[str, Mapping[str, tuple[Any, str]]]) -> None:
    """Keys that only make sense together."""
    w = config.worker
    if w.backoff_max < w.backoff_base:
        given = values["worker"].get("backoff_max") or values["worker"].get("backoff_base")
        where = given[1] if given else "defaults"
        raise ConfigError(
            f"{where}: worker.backoff_max ({w.backoff_max:g}) must be at least "
            f"worker.backoff_base ({w.backoff_base:g})"
        )
