"""Cron schedules: enqueue jobs on a timetable, each tick exactly once across the whole fleet.

Every worker process runs the scheduler for every ``[[schedules]]`` table; none is elected leader.
Exactly-once comes from the store, not from timing:

* **Ids from ticks.** A tick is a UTC instant named by the cron expression in the schedule's
  timezone. Its jobs get ids derived from the schedule name and that instant:
  ``nightly-20261122T030000Z`` for an inline ``job``, ``nightly-20261122T030000Z-<id>`` for each
  line of a ``jobs_file`` (``<id>`` is the line's own id, or its line number when it has none).
  ``Store.enqueue`` is idempotent by primary key, so when ten workers fire the same tick one
  insert wins and the other nine get the ids back in ``EnqueueResult.existing``.
* **Missed ticks need no state.** Because a second enqueue of a tick is a no-op, the policy for
  ticks missed while the service was down is decided at start-up alone. ``missed = "latest"``
  (the default) fires the most recent tick at or before the start (a no-op if some worker already
  fired it); older missed ticks are never replayed. ``missed = "skip"`` fires only ticks after the
  start. After that, each tick fires when it comes due.
* **Late wake-ups collapse.** If the scheduler wakes more than one tick late (a suspended machine,
  a store that was down), it fires only the most recent due tick, under either policy: a queue of
  stale ticks is never replayed in bulk. Sleeps are capped at a minute so a wall-clock jump is
  noticed promptly.
* **Daylight saving.** croniter evaluates the expression in local time. A wall time skipped by
  the spring-forward gap fires at the first instant after it (02:30 Europe/Paris on the last
  Sunday of March fires at 03:00 CEST). A wall time that occurs twice at fall-back fires once
  (the first occurrence) when the hour field is fixed; with an hour field of ``*`` each real hour
  fires, as an hourly job should.
* **Jobs are read at start-up.** A jobs file or inline job is validated (by :mod:`jobs.jsonl`)
  when the schedules load, so a mistake stops start-up instead of failing at 3 a.m.; edit the
  file and restart the workers to change what a schedule enqueues.

``H`` in an expression is hashed from the schedule name, so every worker picks the same minute.

**Cost cap.** ``max_cost_usd`` caps what one tick may spend: each of its N jobs gets a cap of
``max_cost_usd / N`` (or its own ``max_cost_usd`` if that is lower), so a tick can never pass it.
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import structlog
from croniter import CroniterBadDateError, CroniterError, croniter

from jobs import jsonl
from jobs.errors import ConfigError, StoreError
from jobs.models import EnqueueResult, JobSpec
from jobs.store import Clock, Store
from worker.config import Config, read_toml

__all__ = (
    "Missed",
    "ScheduledJob",
    "Schedule",
    "load_schedules",
    "parse_schedules",
    "next_fire_times",
    "latest_tick",
    "tick_job_id",
    "fire",
    "run_scheduler",
)

log = structlog.get_logger("worker.schedules")

#: Sleeps the scheduler's task; injectable so tests drive a fake clock instead of waiting.
Sleep = Callable[[float], Awaitable[None]]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_KEYS = ("name", "cron", "timezone", "jobs_file", "job", "missed", "max_cost_usd")
#: The longest the scheduler sleeps before it reads the clock again.
_MAX_SLEEP = 60.0
#: Problems of a jobs file shown in the start-up error; the rest are counted.
_MAX_ERRORS = 20


class Missed(enum.StrEnum):
    """What to do at start-up about ticks that came due while no scheduler ran."""

    #: Fire the most recent tick at or before the start (a no-op if it already fired).
    LATEST = "latest"
    #: Fire only ticks after the start.
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """One job a tick enqueues: a resolved spec whose id is replaced at each tick."""

    #: Appended to the tick's id: a jobs-file line's id or line number; None for an inline job.
    suffix: str | None
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class Schedule:
    """One ``[[schedules]]`` table, validated."""

    name: str
    cron: str
    #: An IANA timezone name; the cron expression is read in this zone's wall time.
    timezone: str
    missed: Missed
    jobs: tuple[ScheduledJob, ...]
    #: Where ``jobs`` came from (absolute), or None for an inline ``job``.
    jobs_file: Path | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# -- loading ---------------------------------------------------------------------------------


def load_schedules(config: Config) -> list[Schedule]:
    """The schedules of the config file (``config.source``); none when there is no file.

    Raises ``ConfigError`` naming the schedule for any mistake, so start-up stops with a message."""
    if config.source is None:
        return []
    data = read_toml(config.source)
    return parse_schedules(data.get("schedules", []), config)


def parse_schedules(tables: Any, config: Config) -> list[Schedule]:
    """Validate the ``[[schedules]]`` array (as tomllib read it); paths are relative to the config."""
    origin = str(config.source or "config")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{origin}: schedules must be an array of tables: [[schedules]]")
    schedules: list[Schedule] = []
    for number, table in enumerate(tables, 1):
        schedule = _parse_schedule(table, number, origin, config)
        if any(s.name == schedule.name for s in schedules):
            raise ConfigError(f"{origin}: schedule {schedule.name!r} is defined twice")
        schedules.append(schedule)
    return schedules


def _parse_schedule(table: Mapping[str, Any], number: int, origin: str, config: Config) -> Schedule:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{origin}: [[schedules]] #{number}: name must be 1-100 characters of A-Z a-z 0-9 . _ -, "
            f"got {name!r}"
        )
    where = f"{origin}: schedule {name!r}"
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    tz = table.get("timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"{where}: unknown timezone {tz!r} (use an IANA name, e.g. Europe/Paris)") from None
    missed = table.get("missed", Missed.LATEST.value)
    if missed not in [m.value for m in Missed]:
        raise ConfigError(f"{where}: missed must be one of {', '.join(Missed)}, got {missed!r}")
    cron = _check_cron(table.get("cron"), name, tz, where)
    if ("jobs_file" in table) == ("job" in table):
        raise ConfigError(f"{where}: give exactly one of jobs_file (a JSONL file) or job (an inline table)")
    jobs_file: Path | None = None
    if "jobs_file" in table:
        jobs_file, jobs = _file_jobs(table["jobs_file"], where, config)
    else:
        jobs = (_inline_job(table["job"], where, config),)
    jobs = _capped(jobs, table.get("max_cost_usd"), where)
    schedule = Schedule(name, cron, tz, Missed(missed), jobs, jobs_file)
    for job in jobs:
        _check_id(tick_job_id(schedule, datetime.now(UTC), job), where)
    return schedule


def _capped(jobs: tuple[ScheduledJob, ...], cap: Any, where: str) -> tuple[ScheduledJob, ...]:
    """Share a tick's ``max_cost_usd`` between its jobs (see the module docstring)."""
    if cap is None:
        return jobs
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not math.isfinite(cap) or cap <= 0:
        raise ConfigError(f"{where}: max_cost_usd must be a positive number of US dollars, got {cap!r}")
    share = float(cap) / len(jobs)
    return tuple(
        replace(job, spec=replace(job.spec, max_cost_usd=min(share, job.spec.max_cost_usd or share)))
        for job in jobs
    )


def _check_cron(cron: Any, name: str, tz: str, where: str) -> str:
    if cron is None:
        raise ConfigError(f'{where}: cron is required, e.g. cron = "0 3 * * *"')
    if not isinstance(cron, str):
        raise ConfigError(f"{where}: cron must be a string, got {cron!r}")
    try:
        croniter(cron, datetime.now(ZoneInfo(tz)), hash_id=name).get_next(float)
    except CroniterBadDateError:
        raise ConfigError(f"{where}: cron {cron!r} never fires") from None
    except CroniterError as exc:
        raise ConfigError(f"{where}: bad cron expression {cron!r}: {exc}") from None
    return cron


def _file_jobs(value: Any, where: str, config: Config) -> tuple[Path, tuple[ScheduledJob, ...]]:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: jobs_file must be a path, got {value!r}")
    base = config.source.parent if config.source else Path.cwd()
    path = (base / value).resolve()
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{where}: jobs_file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: jobs_file {path}: cannot read: {exc.strerror}") from None
    specs, errors = jsonl.parse_jobs(lines, str(path), config.job_defaults())
    if errors:
        shown = errors[:_MAX_ERRORS]
        if len(errors) > _MAX_ERRORS:
            shown.append(f"... and {len(errors) - _MAX_ERRORS} more")
        raise ConfigError(f"{where}: jobs_file has {len(errors)} problem(s):\n  " + "\n  ".join(shown))
    if not specs:
        raise ConfigError(f"{where}: jobs_file {path} has no jobs")
    # No errors, so each non-blank line made one spec, in order. A line that names no id gets a
    # hash id from jobs.jsonl; in a tick's id its line number reads better and is as stable.
    jobs: list[ScheduledJob] = []
    specs_left = iter(specs)
    for number, raw in enumerate(lines, 1):
        text = raw.decode("utf-8").removeprefix("\ufeff" if number == 1 else "")
        if text.strip():
            spec = next(specs_left)
            given = json.loads(text).get("id") is not None
            jobs.append(ScheduledJob(spec.id if given else str(number), spec))
    return path, tuple(jobs)


def _inline_job(value: Any, where: str, config: Config) -> ScheduledJob:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: job must be an inline table of job fields, got {value!r}")
    if "id" in value:
        raise ConfigError(f"{where}: job: id is not allowed: a scheduled job's id is <name>-<tick>")
    source = f"{where}: job"
    # Through JSON so jobs.jsonl validates it exactly as a line; TOML times become ISO strings.
    line = json.dumps(value, default=_iso)
    specs, errors = jsonl.parse_jobs([line], source, config.job_defaults())
    if errors:
        raise ConfigError("; ".join(e.replace(f"{source}:1:", f"{source}:", 1) for e in errors))
    return ScheduledJob(None, specs[0])


def _iso(value: date | dt_time) -> str:
    return value.isoformat()


def _check_id(job_id: str, where: str) -> None:
    if not jsonl.is_valid_job_id(job_id):
        raise ConfigError(
            f"{where}: it would make job ids such as {job_id!r}, but an id must be at most 200 "
            "characters of A-Z a-z 0-9 . _ - and not start with '.': shorten the name or the line ids"
        )


# -- time ------------------------------------------------------------------------------------


def _croniter(schedule: Schedule, start: float) -> Any:
    return croniter(schedule.cron, datetime.fromtimestamp(start, schedule.zone), hash_id=schedule.name)


def _is_repeat(schedule: Schedule, ts: float) -> bool:
    """True for the second occurrence of a fall-back wall time, unless the hour field is ``*``."""
    local = datetime.fromtimestamp(ts, schedule.zone)
    if not local.fold or local.replace(fold=0).utcoffset() == local.utcoffset():
        return False
    hours = croniter(schedule.cron, hash_id=schedule.name).expanded[1]
    return bool(hours != ["*"])


def next_fire_times(schedule: Schedule, after: float | datetime, count: int) -> list[datetime]:
    """The next ``count`` ticks strictly after ``after`` (epoch seconds or an aware datetime), as
    UTC datetimes; fewer if the expression stops matching (a year field in the past)."""
    start = after.timestamp() if isinstance(after, datetime) else after
    it = _croniter(schedule, math.floor(start))
    ticks: list[datetime] = []
    while len(ticks) < count:
        try:
            ts: float = it.get_next(float)
        except CroniterBadDateError:
            break
        if not _is_repeat(schedule, ts):
            ticks.append(datetime.fromtimestamp(ts, UTC))
    return ticks


def latest_tick(schedule: Schedule, at: float) -> datetime | None:
    """The most recent tick at or before ``at`` (epoch seconds), or None if there is none."""
    # Ticks fall on whole seconds and get_prev is strict, so start one second past floor(at).
    it = _croniter(schedule, math.floor(at) + 1)
    while True:
        try:
            ts: float = it.get_prev(float)
        except CroniterBadDateError:
            return None
        if not _is_repeat(schedule, ts):
            return datetime.fromtimestamp(ts, UTC)


# -- firing ----------------------------------------------------------------------------------


def tick_job_id(schedule: Schedule, tick: datetime, job: ScheduledJob) -> str:
    """``<name>-<tick UTC, basic ISO 8601>[-<suffix>]``, e.g. ``nightly-20261122T030000Z-3``."""
    stamp = tick.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{schedule.name}-{stamp}" if job.suffix is None else f"{schedule.name}-{stamp}-{job.suffix}"


async def fire(schedule: Schedule, tick: datetime, store: Store, config: Config) -> EnqueueResult:
    """Enqueue the jobs of one tick. Safe to call any number of times, from any number of
    workers: the ids are derived from the tick, so only the first call inserts.

    ``config`` is not read today: the jobs were resolved against it (model and token defaults)
    when the schedules loaded, so every tick of a run enqueues the same specs."""
    specs = [replace(job.spec, id=tick_job_id(schedule, tick, job)) for job in schedule.jobs]
    result = await store.enqueue(specs)
    log.info(
        "schedule_fired",
        name=schedule.name,
        tick=tick.astimezone(UTC).isoformat(),
        inserted=len(result.inserted),
        existing=len(result.existing),
    )
    return result


async def run_scheduler(
    schedules: Sequence[Schedule],
    store: Store,
    config: Config,
    *,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> None:
    """Fire each schedule's ticks as they come due, until cancelled.

    Start it in the worker's task group beside the pool. A failed enqueue (the store is down) is
    logged and retried every ``[worker] poll_seconds`` rather than stopping the pool, as the pool
    does with a failed claim. Cancelling mid-fire is safe: a tick's jobs are enqueued in one
    transaction, and firing it again is a no-op."""
    started = clock()
    # Per schedule: ticks at or before this instant are dealt with (fired, or passed over).
    done: dict[str, float] = {}
    for schedule in schedules:
        latest = latest_tick(schedule, started)
        fire_latest = schedule.missed is Missed.LATEST and latest is not None
        done[schedule.name] = -math.inf if fire_latest else started
    while True:
        now = clock()
        retry = False
        for schedule in schedules:
            due = latest_tick(schedule, now)
            if due is None or due.timestamp() <= done[schedule.name]:
                continue
            try:
                await fire(schedule, due, store, config)
            except StoreError as exc:
                log.warning("schedule_fire_failed", name=schedule.name, tick=due.isoformat(), error=str(exc))
                retry = True
                continue
            done[schedule.name] = due.timestamp()
        wake = now + _MAX_SLEEP
        if retry:
            wake = min(wake, now + config.worker.poll_seconds)
        for schedule in schedules:
            upcoming = next_fire_times(schedule, now, 1)
            if upcoming:
                wake = min(wake, upcoming[0].timestamp())
        await sleep(max(0.0, wake - clock()))
