"""Cron schedules: ticks, the missed-tick policy, timezones, job ids, config errors and commands.

Time is a :class:`FakeTime` shared by the schedulers and the stores: the test moves it forward
tick by tick and waits until every scheduler is asleep again, so nothing waits for real minutes
and nothing is synchronised by sleeping.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

import worker.cli
from jobs.errors import ConfigError
from jobs.models import EnqueueResult, JobSpec
from jobs.sqlite import SQLiteStore
from tests.store_fixtures import make_spec
from worker.config import Config, load_config
from worker.schedules import (
    Missed,
    Schedule,
    ScheduledJob,
    fire,
    latest_tick,
    load_schedules,
    next_fire_times,
    run_scheduler,
)


def at(text: str) -> float:
    """Epoch seconds of an ISO 8601 UTC time such as ``2026-11-22T03:00:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeTime:
    """A wall clock and a sleep that move only when the test says so.

    ``sleep`` parks the caller until ``advance_to`` passes its deadline; ``until_sleeping(n)``
    returns once ``n`` callers are parked, which for a scheduler means it has done all the work
    that was due and is waiting for the next tick.
    """

    def __init__(self, start: float) -> None:
        self.now = start
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._changed = anyio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        deadline = self.now + seconds
        if deadline <= self.now:
            await anyio.lowlevel.checkpoint()
            return
        entry = (deadline, anyio.Event())
        self._sleepers.append(entry)
        self._changed.set()
        self._changed = anyio.Event()
        try:
            await entry[1].wait()
        finally:
            self._sleepers.remove(entry)

    def advance_to(self, now: float) -> None:
        assert now >= self.now, "time never goes back in these tests"
        self.now = now
        for deadline, event in self._sleepers:
            if deadline <= now:
                event.set()

    async def until_sleeping(self, count: int) -> None:
        with anyio.fail_after(10):
            while sum(not event.is_set() for _, event in self._sleepers) < count:
                await self._changed.wait()


class RecordingStore(SQLiteStore):
    """A real SQLite store that remembers what each of its enqueues returned."""

    def __init__(self, path: Path, *, clock: FakeTime) -> None:
        super().__init__(path, clock=clock)
        self.results: list[EnqueueResult] = []

    async def enqueue(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        result = await super().enqueue(specs)
        self.results.append(result)
        return result


def inline_schedule(
    name: str = "every", cron: str = "* * * * *", *, timezone: str = "UTC", missed: Missed = Missed.LATEST
) -> Schedule:
    return Schedule(name, cron, timezone, missed, (ScheduledJob(None, make_spec("template")),))


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """``worker.cli.main`` configures structlog for its process; put it back for the next test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Callable[[FakeTime], RecordingStore]]:
    """Opens stores on one SQLite file, as several worker processes would, and closes them."""
    opened: list[RecordingStore] = []

    def open_one(clock: FakeTime) -> RecordingStore:
        opened.append(RecordingStore(tmp_path / "jobs.db", clock=clock))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


async def job_ids(store: SQLiteStore) -> list[str]:
    return [job.id for job in await store.list_jobs()]


# -- exactly once across the fleet -----------------------------------------------------------


class TestFleet:
    async def test_each_tick_enqueues_once_across_two_schedulers(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """Two schedulers on one SQLite file fire every tick; the store's idempotent enqueue lets
        one insert and hands the other the id back as existing."""
        clock = FakeTime(at("2026-11-22T02:59:30"))
        first, second = stores(clock), stores(clock)
        schedule = inline_schedule(missed=Missed.SKIP)
        ticks = ["2026-11-22T03:00:00", "2026-11-22T03:01:00", "2026-11-22T03:02:00"]
        # Open both connections first: two connections switching a brand-new file to WAL at the
        # same moment can get "database is locked" (a start-up race of the store, not of ticks).
        for store in (first, second):
            await store.counts()
        async with anyio.create_task_group() as tg:
            for store in (first, second):
                tg.start_soon(
                    partial(run_scheduler, [schedule], store, Config(), clock=clock, sleep=clock.sleep)
                )
            await clock.until_sleeping(2)
            for tick in ticks:
                clock.advance_to(at(tick))
                await clock.until_sleeping(2)
            tg.cancel_scope.cancel()

        expected = ["every-20261122T030000Z", "every-20261122T030100Z", "every-20261122T030200Z"]
        assert await job_ids(first) == expected
        for job_id in expected:
            inserted = [r for r in first.results + second.results if r.inserted == (job_id,)]
            existing = [r for r in first.results + second.results if r.existing == (job_id,)]
            assert len(inserted) == 1
            assert len(existing) == 1
        assert len(first.results) == len(second.results) == len(ticks)

    async def test_fire_is_idempotent_and_logs_one_event(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """Firing a tick twice inserts once; each fire logs ``schedule_fired`` with the counts."""
        store = stores(FakeTime(at("2026-11-22T03:00:00")))
        schedule = inline_schedule("nightly", "0 3 * * *")
        tick = utc("2026-11-22T03:00:00")
        with capture_logs() as logs:
            first = await fire(schedule, tick, store, Config())
            again = await fire(schedule, tick, store, Config())
        assert first == EnqueueResult(inserted=("nightly-20261122T030000Z",), existing=())
        assert again == EnqueueResult(inserted=(), existing=("nightly-20261122T030000Z",))
        assert [(e["event"], e["name"], e["tick"], e["inserted"], e["existing"]) for e in logs] == [
            ("schedule_fired", "nightly", "2026-11-22T03:00:00+00:00", 1, 0),
            ("schedule_fired", "nightly", "2026-11-22T03:00:00+00:00", 0, 1),
        ]


# -- missed ticks ----------------------------------------------------------------------------


async def run_for(
    store: RecordingStore, clock: FakeTime, schedule: Schedule, start: str, ticks: Sequence[str] = ()
) -> None:
    """Run one scheduler from ``start`` through each of ``ticks``, then stop it (the service goes
    down)."""
    clock.advance_to(at(start))
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(run_scheduler, [schedule], store, Config(), clock=clock, sleep=clock.sleep))
        await clock.until_sleeping(1)
        for tick in ticks:
            clock.advance_to(at(tick))
            await clock.until_sleeping(1)
        tg.cancel_scope.cancel()


class TestMissedTicks:
    async def test_latest_fires_the_most_recent_missed_tick_only(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """Down from 02:30 to 05:30 across the 03:00, 04:00 and 05:00 ticks: on start, ``latest``
        fires 05:00 alone, then the ticks that come due."""
        clock = FakeTime(at("2026-11-22T01:30:00"))
        store = stores(clock)
        schedule = inline_schedule("hourly", "0 * * * *", missed=Missed.LATEST)
        await run_for(store, clock, schedule, "2026-11-22T01:30:00", ["2026-11-22T02:00:00"])
        await run_for(store, clock, schedule, "2026-11-22T05:30:00", ["2026-11-22T06:00:00"])
        assert await job_ids(store) == [
            "hourly-20261122T010000Z",  # the first start's own "latest"
            "hourly-20261122T020000Z",
            "hourly-20261122T050000Z",
            "hourly-20261122T060000Z",
        ]

    async def test_latest_on_restart_is_a_no_op_when_the_tick_already_fired(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """A restart between ticks fires the latest tick again; the store reports it existing."""
        clock = FakeTime(at("2026-11-22T05:00:00"))
        store = stores(clock)
        schedule = inline_schedule("hourly", "0 * * * *", missed=Missed.LATEST)
        await run_for(store, clock, schedule, "2026-11-22T05:00:00")
        await run_for(store, clock, schedule, "2026-11-22T05:40:00")
        assert await job_ids(store) == ["hourly-20261122T050000Z"]
        assert [r.existing for r in store.results] == [(), ("hourly-20261122T050000Z",)]

    async def test_skip_fires_only_ticks_after_the_start(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """With ``skip``, the ticks missed while down never fire, not even the latest."""
        clock = FakeTime(at("2026-11-22T01:30:00"))
        store = stores(clock)
        schedule = inline_schedule("hourly", "0 * * * *", missed=Missed.SKIP)
        await run_for(store, clock, schedule, "2026-11-22T01:30:00", ["2026-11-22T02:00:00"])
        await run_for(store, clock, schedule, "2026-11-22T05:30:00", ["2026-11-22T06:00:00"])
        assert await job_ids(store) == ["hourly-20261122T020000Z", "hourly-20261122T060000Z"]

    async def test_a_late_wake_up_fires_only_the_latest_due_tick(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """A scheduler that wakes hours late (a suspended machine) does not replay every tick."""
        clock = FakeTime(at("2026-11-22T01:30:00"))
        store = stores(clock)
        schedule = inline_schedule("hourly", "0 * * * *", missed=Missed.SKIP)
        await run_for(store, clock, schedule, "2026-11-22T01:30:00", ["2026-11-22T04:10:00"])
        assert await job_ids(store) == ["hourly-20261122T040000Z"]


# -- timezones -------------------------------------------------------------------------------


class TestTimezones:
    def test_a_paris_morning_moves_in_utc_across_spring_forward(self) -> None:
        """09:00 Paris is 08:00Z in winter (CET) and 07:00Z from the last Sunday of March (CEST)."""
        schedule = inline_schedule("morning", "0 9 * * *", timezone="Europe/Paris")
        assert next_fire_times(schedule, at("2026-03-27T12:00:00"), 3) == [
            utc("2026-03-28T08:00:00"),
            utc("2026-03-29T07:00:00"),
            utc("2026-03-30T07:00:00"),
        ]

    def test_a_paris_morning_moves_back_at_fall_back(self) -> None:
        schedule = inline_schedule("morning", "0 9 * * *", timezone="Europe/Paris")
        assert next_fire_times(schedule, at("2026-10-24T12:00:00"), 2) == [
            utc("2026-10-25T08:00:00"),
            utc("2026-10-26T08:00:00"),
        ]

    def test_a_time_in_the_spring_gap_fires_right_after_it(self) -> None:
        """02:30 does not exist in Paris on 2026-03-29: it fires at 03:00 CEST (01:00Z)."""
        schedule = inline_schedule("night", "30 2 * * *", timezone="Europe/Paris")
        assert next_fire_times(schedule, at("2026-03-28T12:00:00"), 2) == [
            utc("2026-03-29T01:00:00"),
            utc("2026-03-30T00:30:00"),
        ]

    def test_a_repeated_fall_back_time_fires_once(self) -> None:
        """02:30 happens twice in Paris on 2026-10-25 (00:30Z and 01:30Z): a nightly job runs once."""
        schedule = inline_schedule("night", "30 2 * * *", timezone="Europe/Paris")
        assert next_fire_times(schedule, at("2026-10-24T12:00:00"), 2) == [
            utc("2026-10-25T00:30:00"),
            utc("2026-10-26T01:30:00"),
        ]
        assert latest_tick(schedule, at("2026-10-25T01:45:00")) == utc("2026-10-25T00:30:00")

    def test_an_hourly_job_fires_every_real_hour_at_fall_back(self) -> None:
        """With ``*`` as the hour, the repeated 02:00 hour fires twice: it is two real hours."""
        schedule = inline_schedule("hourly", "0 * * * *", timezone="Europe/Paris")
        assert next_fire_times(schedule, at("2026-10-24T23:30:00"), 3) == [
            utc("2026-10-25T00:00:00"),
            utc("2026-10-25T01:00:00"),
            utc("2026-10-25T02:00:00"),
        ]

    async def test_the_scheduler_fires_at_the_utc_instants(
        self, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """Driven across the spring change, the scheduler's ids are the UTC instants of 09:00 Paris."""
        clock = FakeTime(at("2026-03-27T12:00:00"))
        store = stores(clock)
        schedule = inline_schedule("morning", "0 9 * * *", timezone="Europe/Paris", missed=Missed.SKIP)
        await run_for(
            store,
            clock,
            schedule,
            "2026-03-27T12:00:00",
            ["2026-03-28T08:00:00", "2026-03-29T06:59:59", "2026-03-29T07:00:00", "2026-03-30T07:00:00"],
        )
        assert await job_ids(store) == [
            "morning-20260328T080000Z",
            "morning-20260329T070000Z",
            "morning-20260330T070000Z",
        ]


# -- config: jobs files, inline jobs and ids -------------------------------------------------


def write_config(folder: Path, schedules: str, files: dict[str, str] | None = None) -> Path:
    """A config.toml with a SQLite queue beside it, the given ``[[schedules]]`` text and files."""
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    path = folder / "config.toml"
    path.write_text('[queue]\nurl = "sqlite:///jobs.db"\n\n' + textwrap.dedent(schedules))
    return path


def schedules_of(path: Path) -> list[Schedule]:
    return load_schedules(load_config(path, env={}))


NIGHTLY_FILE = """
    [[schedules]]
    name = "nightly"
    cron = "0 3 * * *"
    jobs_file = "jobs/nightly.jsonl"
"""
NIGHTLY_INLINE = """
    [[schedules]]
    name = "digest"
    cron = "30 8 * * 1-5"
    timezone = "Europe/Paris"
    missed = "skip"
    job = { prompt = "Write the digest.", max_tokens = 2048, metadata = { team = "news" } }
"""


class TestJobs:
    def test_no_config_file_means_no_schedules(self) -> None:
        assert load_schedules(Config()) == []

    def test_a_config_without_schedules_has_none(self, tmp_path: Path) -> None:
        assert schedules_of(write_config(tmp_path, "")) == []

    async def test_jobs_file_ids_are_the_tick_and_the_line_id_or_number(
        self, tmp_path: Path, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        """A line's own id, else its line number (blank lines count), follows the tick's id."""
        (tmp_path / "jobs").mkdir()
        lines = """
            {"id": "intro", "prompt": "Write an intro."}

            {"prompt": "Write a summary.", "model": "claude-other"}
        """
        path = write_config(tmp_path, NIGHTLY_FILE, {"jobs/nightly.jsonl": lines})
        [schedule] = schedules_of(path)
        assert schedule.jobs_file == tmp_path / "jobs" / "nightly.jsonl"
        assert (schedule.name, schedule.cron, schedule.timezone, schedule.missed) == (
            "nightly",
            "0 3 * * *",
            "UTC",
            Missed.LATEST,
        )
        store = stores(FakeTime(at("2026-11-22T03:00:00")))
        result = await fire(schedule, utc("2026-11-22T03:00:00"), store, load_config(path, env={}))
        assert result.inserted == ("nightly-20261122T030000Z-intro", "nightly-20261122T030000Z-3")
        summary = await store.get("nightly-20261122T030000Z-3")
        assert summary.spec.model == "claude-other"
        assert summary.spec.max_tokens == Config().anthropic.max_tokens  # the config's default

    async def test_an_inline_job_gets_the_tick_id(
        self, tmp_path: Path, stores: Callable[[FakeTime], RecordingStore]
    ) -> None:
        [schedule] = schedules_of(write_config(tmp_path, NIGHTLY_INLINE))
        assert (schedule.timezone, schedule.missed, schedule.jobs_file) == ("Europe/Paris", Missed.SKIP, None)
        store = stores(FakeTime(at("2026-11-23T07:30:00")))
        result = await fire(schedule, utc("2026-11-23T07:30:00"), store, Config())
        assert result.inserted == ("digest-20261123T073000Z",)
        job = await store.get("digest-20261123T073000Z")
        assert (job.spec.messages[0].content, job.spec.max_tokens) == ("Write the digest.", 2048)
        assert dict(job.spec.metadata) == {"team": "news"}

    def test_a_schedule_cost_cap_is_shared_by_the_jobs_of_a_tick(self, tmp_path: Path) -> None:
        """``max_cost_usd`` caps a tick: each of its N jobs may spend a 1/N share, or less if
        the job's own cap is lower."""
        (tmp_path / "jobs").mkdir()
        lines = """
            {"id": "a", "prompt": "Write."}
            {"id": "b", "prompt": "Write.", "max_cost_usd": 0.1}
        """
        text = NIGHTLY_FILE + "    max_cost_usd = 1.0\n"
        [schedule] = schedules_of(write_config(tmp_path, text, {"jobs/nightly.jsonl": lines}))
        assert [job.spec.max_cost_usd for job in schedule.jobs] == [0.5, 0.1]


# -- config: every mistake stops start-up, naming the schedule -------------------------------

GOOD_JOB = 'job = { prompt = "Write." }\n'
BAD_INPUTS = {
    "bad cron": ('name = "nightly"\ncron = "61 * * * *"\n' + GOOD_JOB, ["bad cron expression", "61 * * * *"]),
    "cron never fires": ('name = "nightly"\ncron = "0 0 30 2 *"\n' + GOOD_JOB, ["never fires"]),
    "no cron": ('name = "nightly"\n' + GOOD_JOB, ["cron is required"]),
    "unknown timezone": (
        'name = "nightly"\ncron = "0 3 * * *"\ntimezone = "Mars/Olympus"\n' + GOOD_JOB,
        ["unknown timezone 'Mars/Olympus'"],
    ),
    "missing jobs file": (
        'name = "nightly"\ncron = "0 3 * * *"\njobs_file = "missing.jsonl"\n',
        ["jobs_file", "missing.jsonl", "not found"],
    ),
    "invalid jobs file": (
        'name = "nightly"\ncron = "0 3 * * *"\njobs_file = "bad.jsonl"\n',
        [
            "jobs_file has 2 problem(s)",
            "bad.jsonl:2: max_tokens: must be a positive integer",
            "bad.jsonl:3: line",
        ],
    ),
    "empty jobs file": ('name = "nightly"\ncron = "0 3 * * *"\njobs_file = "empty.jsonl"\n', ["has no jobs"]),
    "bad inline job": (
        'name = "nightly"\ncron = "0 3 * * *"\njob = { prompt = "Write.", max_tokens = "lots" }\n',
        ["job: max_tokens: must be an integer"],
    ),
    "inline job with an id": (
        'name = "nightly"\ncron = "0 3 * * *"\njob = { id = "x", prompt = "Write." }\n',
        ["id is not allowed"],
    ),
    "unknown key": (
        'name = "nightly"\ncron = "0 3 * * *"\nretries = 3\n' + GOOD_JOB,
        ["unknown key 'retries'"],
    ),
    "both job and jobs_file": (
        'name = "nightly"\ncron = "0 3 * * *"\njobs_file = "ok.jsonl"\n' + GOOD_JOB,
        ["exactly one of jobs_file"],
    ),
    "neither job nor jobs_file": ('name = "nightly"\ncron = "0 3 * * *"\n', ["exactly one of jobs_file"]),
    "bad cost cap": (
        'name = "nightly"\ncron = "0 3 * * *"\nmax_cost_usd = -1\n' + GOOD_JOB,
        ["max_cost_usd must be a positive number of US dollars, got -1"],
    ),
    "bad missed policy": (
        'name = "nightly"\ncron = "0 3 * * *"\nmissed = "all"\n' + GOOD_JOB,
        ["missed must be one of latest, skip"],
    ),
    "ids too long": (
        'name = "nightly"\ncron = "0 3 * * *"\njobs_file = "long.jsonl"\n',
        ["would make job ids such as 'nightly-"],
    ),
}
FILES = {
    "bad.jsonl": '{"prompt": "ok"}\n{"prompt": "x", "max_tokens": 0}\nnot json\n',
    "empty.jsonl": "\n",
    "ok.jsonl": '{"prompt": "ok"}\n',
    "long.jsonl": json.dumps({"id": "x" * 190, "prompt": "ok"}) + "\n",
}


class TestBadConfig:
    @pytest.mark.parametrize("case", list(BAD_INPUTS))
    def test_each_mistake_is_a_config_error_naming_the_schedule(self, tmp_path: Path, case: str) -> None:
        body, fragments = BAD_INPUTS[case]
        path = write_config(tmp_path, "[[schedules]]\n" + body, FILES)
        with pytest.raises(ConfigError) as caught:
            schedules_of(path)
        message = str(caught.value)
        for fragment in [f"{path.resolve()}: schedule 'nightly'", *fragments]:
            assert fragment in message

    def test_a_duplicate_name_is_an_error(self, tmp_path: Path) -> None:
        table = '[[schedules]]\nname = "nightly"\ncron = "0 3 * * *"\n' + GOOD_JOB
        with pytest.raises(ConfigError, match="schedule 'nightly' is defined twice"):
            schedules_of(write_config(tmp_path, table + "\n" + table))

    @pytest.mark.parametrize("name", ["", "night ly", "x" * 101, 7])
    def test_a_bad_name_is_an_error_naming_the_table(self, tmp_path: Path, name: object) -> None:
        table = f'[[schedules]]\nname = {json.dumps(name)}\ncron = "0 3 * * *"\n' + GOOD_JOB
        with pytest.raises(ConfigError, match=r"\[\[schedules\]\] #1: name must be 1-100 characters"):
            schedules_of(write_config(tmp_path, table))

    def test_schedules_must_be_an_array_of_tables(self, tmp_path: Path) -> None:
        path = tmp_path / "config.toml"
        path.write_text("schedules = 3\n")
        with pytest.raises(ConfigError, match="schedules must be an array of tables"):
            schedules_of(path)


# -- the commands ----------------------------------------------------------------------------

CliMain = Callable[[list[str]], int]


@pytest.fixture
def cli_main() -> CliMain:
    """``worker.cli.main``, which registers the ``schedule`` commands itself."""
    return worker.cli.main


class TestCommands:
    def test_a_bad_schedule_exits_2_with_a_message(
        self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        body, _ = BAD_INPUTS["bad cron"]
        path = write_config(tmp_path, "[[schedules]]\n" + body)
        assert cli_main(["schedule", "list", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ")
        assert "schedule 'nightly'" in err
        assert "Traceback" not in err

    def test_list_shows_each_schedule_and_its_next_three_ticks(
        self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "jobs").mkdir()
        files = {"jobs/nightly.jsonl": '{"prompt": "a"}\n{"prompt": "b"}\n'}
        path = write_config(tmp_path, NIGHTLY_FILE + NIGHTLY_INLINE, files)
        assert cli_main(["schedule", "list", "--config", str(path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == (
            "nightly  cron '0 3 * * *'  timezone UTC  missed=latest  "
            f"jobs: 2 jobs from {tmp_path / 'jobs' / 'nightly.jsonl'}"
        )
        assert re.fullmatch(r"  next: (\d{4}-\d\d-\d\d 03:00:00\+00:00(, )?){3}", lines[1])
        assert (
            lines[2] == "digest  cron '30 8 * * 1-5'  timezone Europe/Paris  missed=skip  jobs: 1 inline job"
        )
        assert re.fullmatch(r"  next: (\d{4}-\d\d-\d\d 08:30:00\+0[12]:00(, )?){3}", lines[3])

    def test_list_json(self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]) -> None:
        path = write_config(tmp_path, NIGHTLY_INLINE)
        assert cli_main(["schedule", "list", "--json", "--config", str(path)]) == 0
        [entry] = json.loads(capsys.readouterr().out)
        upcoming = [datetime.fromisoformat(text) for text in entry.pop("next")]
        assert entry == {
            "name": "digest",
            "cron": "30 8 * * 1-5",
            "timezone": "Europe/Paris",
            "missed": "skip",
            "jobs_file": None,
            "jobs": 1,
        }
        assert len(upcoming) == 3
        assert all((t.hour, t.minute, t.weekday() < 5) == (8, 30, True) for t in upcoming)
        assert upcoming == sorted(upcoming)

    def test_list_without_schedules(
        self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write_config(tmp_path, "")
        assert cli_main(["schedule", "list", "--config", str(path)]) == 0
        assert capsys.readouterr().out.startswith("no schedules in ")

    def test_run_fires_now_and_reports_what_it_inserted(
        self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write_config(tmp_path, NIGHTLY_INLINE)
        assert cli_main(["schedule", "run", "digest", "--config", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        match = re.fullmatch(r"fired digest at (\S+): 1 inserted, 0 existing", out[0])
        assert match is not None
        tick = datetime.fromisoformat(match[1])
        assert out[1:] == [f"  inserted digest-{tick.strftime('%Y%m%dT%H%M%SZ')}"]

        async def stored() -> list[str]:
            store = SQLiteStore(tmp_path / "jobs.db")
            try:
                return await job_ids(store)
            finally:
                await store.close()

        assert anyio.run(stored) == [f"digest-{tick.strftime('%Y%m%dT%H%M%SZ')}"]

    def test_run_an_unknown_schedule_exits_1(
        self, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write_config(tmp_path, NIGHTLY_INLINE)
        assert cli_main(["schedule", "run", "nope", "--config", str(path)]) == 1
        assert capsys.readouterr().err == "error: no schedule named 'nope' (known: digest)\n"
