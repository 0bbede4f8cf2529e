"""Rate limits per model class: matching, config, per-class buckets, and two classes limited
independently end to end (the real SDK over HTTP against the simulator enforcing both)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import anthropic
import anyio
import pytest

from jobs.buckets import BucketState, Limits
from jobs.classes import DEFAULT_CLASS, ModelClass, RateClasses, bucket_key
from jobs.errors import ConfigError
from jobs.models import JobSpec, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, PREFILL_MODEL, expected, spec
from tests.store_fixtures import FakeClock
from worker.class_limits import ClassLimiter, check_class_limits
from worker.config import load_config
from worker.limits import CLOCK_MARGIN
from worker.pool import Pool
from worker.simulator import SimulatorConfig, run_simulator
from worker.simulator.ratelimit import RateClass, RateLimits, parse_rate_class

OPUS = ModelClass("opus", ("claude-opus-*",), Limits(output_tokens=600))
HAIKU = ModelClass("haiku", ("claude-haiku-*", "claude-3-haiku-*"), Limits(requests=50))
CLASSES = RateClasses(Limits(output_tokens=10_000), (OPUS, HAIKU))


# -- matching and config -------------------------------------------------------------------------


def test_a_model_belongs_to_the_first_class_that_matches_else_the_default() -> None:
    overlapping = RateClasses(Limits(), (OPUS, ModelClass("all", ("claude-*",), Limits(requests=1))))
    assert CLASSES.class_of("claude-opus-4-6") == "opus"
    assert CLASSES.class_of("claude-3-haiku-20240307") == "haiku"
    assert CLASSES.class_of("claude-sonnet-5-5") == DEFAULT_CLASS
    assert CLASSES.class_of("CLAUDE-OPUS-4-6") == DEFAULT_CLASS  # model ids are case-sensitive
    assert overlapping.class_of("claude-opus-4-6") == "opus"
    assert overlapping.class_of("claude-haiku-4-5") == "all"
    assert CLASSES.limits_of("haiku") == Limits(requests=50)
    assert CLASSES.limits_of(DEFAULT_CLASS) == Limits(output_tokens=10_000)
    assert bucket_key(DEFAULT_CLASS) == "anthropic"  # the key the single bucket always had
    assert bucket_key("opus") == "anthropic:opus"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_classes_are_read_from_the_config_file_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[rate_limits]\noutput_tokens_per_minute = 10000\n"
        '[rate_limits.classes.opus]\nmatch = "claude-opus-*"\noutput_tokens_per_minute = 600\n'
        '[rate_limits.classes.haiku]\nmatch = ["claude-haiku-*", "claude-3-haiku-*"]\n'
        "requests_per_minute = 50\n",
    )
    limits = load_config(path, env={}).rate_limits
    assert limits.output_tokens_per_minute == 10_000
    assert limits.classes == (OPUS, HAIKU)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[rate_limits.classes.Opus]\nmatch = "x*"\n', r"\[rate_limits.classes.Opus\]: a class name"),
        ('[rate_limits.classes.default]\nmatch = "x*"\n', r"not 'default'"),
        ("[rate_limits.classes.opus]\noutput_tokens_per_minute = 5\n", r"opus\]: match must be a glob"),
        ('[rate_limits.classes.opus]\nmatch = ["a*", 3]\n', r"match must be a glob"),
        ('[rate_limits.classes.opus]\nmatch = "a*"\notpm = 5\n', r"opus\]: unknown key 'otpm'"),
        (
            '[rate_limits.classes.opus]\nmatch = "a*"\noutput_tokens_per_minute = -1\n',
            r"opus\]: output_tokens_per_minute must be an integer from 0",
        ),
        ("[rate_limits]\nclasses = 3\n", r"classes must be a table of tables"),
        ("[rate_limits.classes]\nopus = 3\n", r"opus\] must be a table"),
    ],
)
def test_a_bad_class_stops_start_up_naming_the_file_and_key(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, table)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, env={})
    assert str(path) in str(caught.value)


def test_classes_cannot_come_from_the_environment_or_flags() -> None:
    with pytest.raises(ConfigError, match=r"LONGFORM_RATE_LIMITS_CLASSES: .*only be set in the config file"):
        load_config(env={"LONGFORM_RATE_LIMITS_CLASSES": "x"})
    with pytest.raises(ConfigError, match=r"--set rate_limits.classes: .*config file"):
        load_config(env={}, overrides={"rate_limits.classes": "x"})


def test_max_tokens_above_a_class_output_limit_is_a_config_error_naming_the_class() -> None:
    with pytest.raises(ConfigError, match=r"\[rate_limits.classes.opus\] output_tokens_per_minute \(600\)"):
        check_class_limits(CLASSES, max_tokens=1000)
    check_class_limits(CLASSES, max_tokens=600)


def test_the_simulator_reads_rate_classes_from_its_flag() -> None:
    assert parse_rate_class("opus=claude-opus-*,x-*:rpm=5:otpm=900") == RateClass(
        "opus", ("claude-opus-*", "x-*"), RateLimits(requests_per_minute=5, output_tokens_per_minute=900)
    )
    with pytest.raises(ValueError, match="tpm=5"):
        parse_rate_class("opus=claude-opus-*:tpm=5")


# -- buckets per class ---------------------------------------------------------------------------


async def test_each_class_draws_on_its_own_bucket_row(tmp_path: Path) -> None:
    """A full opus bucket leaves haiku and the default class with room, and is stored under its
    own key, so every process of the fleet sees the same."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "jobs.db", clock=clock)
    try:
        limiter = ClassLimiter(store, CLASSES, clock=clock)
        opus = limiter.for_model("claude-opus-4-6")
        assert opus is limiter.limiter("opus")
        await opus.acquire(10, 600)

        models = ["claude-opus-4-6", "claude-haiku-4-5", "claude-sonnet-5-5"]
        rooms = await limiter.rooms(models, 10, 600)
        row = await store.update_buckets("anthropic:opus", OPUS.limits, lambda s, now: (s, s))
        untouched = await store.update_buckets("anthropic", CLASSES.default, lambda s, now: (s, s))

        assert rooms["opus"] > 50  # 600 tokens at 10 a second, minus nothing refunded yet
        assert rooms["haiku"] == rooms[DEFAULT_CLASS] == 0.0
        assert row.output_tokens == pytest.approx(-600 * CLOCK_MARGIN / 60)  # all, and the margin
        assert untouched == BucketState.full(CLASSES.default, clock())
        assert limiter.for_model("claude-haiku-4-5").max_output_tokens is None  # haiku: RPM only
    finally:
        await store.close()


async def test_headers_recalibrate_only_the_class_that_answered(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "jobs.db", clock=clock)
    try:
        limiter = ClassLimiter(store, CLASSES, clock=clock)
        sonnet = limiter.for_model("claude-sonnet-5-5")
        ticket = await sonnet.acquire(10, 100)
        await sonnet.started(ticket, {"anthropic-ratelimit-output-tokens-remaining": "2000"})
        opus_row = await store.update_buckets("anthropic:opus", OPUS.limits, lambda s, now: (s, s))
        default_row = await store.update_buckets("anthropic", CLASSES.default, lambda s, now: (s, s))
        assert default_row.output_tokens == 2000.0  # 9,900 by our count, lowered to the server's
        assert opus_row == BucketState.full(OPUS.limits, clock())
    finally:
        await store.close()


async def test_the_simulator_limits_and_reports_each_class_apart() -> None:
    """A request for an Opus model draws on (and reports) the opus buckets; one for any other
    model on the shared ones, which an exhausted opus class leaves untouched."""
    config = SimulatorConfig(otpm=10_000, rate_classes=SIM_CLASSES)
    async with run_simulator(config) as sim:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
        try:

            async def ask(model: str, max_tokens: int) -> dict[str, str]:
                raw = await client.messages.with_raw_response.create(
                    model=model,
                    max_tokens=max_tokens,
                    messages=[{"role": "user", "content": "Write. [sim:tokens=450]"}],
                )
                return dict(raw.headers)

            opus = await ask(CONTINUATION_MODEL, 500)
            with pytest.raises(anthropic.RateLimitError) as refused:
                await ask(CONTINUATION_MODEL, 500)  # 150 left + a little refill: no room
            haiku = await ask(PREFILL_MODEL, 500)
        finally:
            await client.close()
    assert opus["anthropic-ratelimit-output-tokens-limit"] == "600"
    assert refused.value.response.headers["anthropic-ratelimit-output-tokens-limit"] == "600"
    assert haiku["anthropic-ratelimit-output-tokens-limit"] == "10000"
    assert sim.accounting().rate_limited_by_class == {"opus": 1}


# -- end to end ----------------------------------------------------------------------------------

#: The simulator's classes: opus 600 output tokens a minute (one 500-token request, then about
#: 40 s until the next fits); every other model shares generous buckets.
SIM_CLASSES = (RateClass("opus", ("claude-opus-*",), RateLimits(output_tokens_per_minute=600)),)
POOL_CLASSES = RateClasses(
    Limits(requests=6000, output_tokens=1_000_000),
    (ModelClass("opus", ("claude-opus-*",), Limits(output_tokens=600)),),
)


async def all_succeeded(store: SQLiteStore, jobs: list[JobSpec], limit: float = 30.0) -> None:
    """Return once every job in ``jobs`` has succeeded, woken by the store's change signal."""
    signal = store.change_signal()
    try:
        with anyio.fail_after(limit):
            while not all([(await store.get(j.id)).state is State.SUCCEEDED for j in jobs]):
                await signal.wait(0.5)
    finally:
        await signal.close()


async def test_a_full_class_does_not_hold_up_another(tmp_path: Path) -> None:
    """Opus jobs come first (priority) and fill their class after one request; with two slots,
    a pool that claimed them anyway would sit both slots in opus's wait. Instead every haiku job
    finishes while opus waits for its refill, and the simulator answers no 429."""
    opus = [
        dataclasses.replace(
            spec(f"opus-{i}", tokens=450, max_tokens=500, model=CONTINUATION_MODEL), priority=5
        )
        for i in range(3)
    ]
    haiku = [spec(f"haiku-{i}", tokens=200, model=PREFILL_MODEL) for i in range(6)]
    store = SQLiteStore(tmp_path / "jobs.db")
    sim_config = SimulatorConfig(rpm=6000, otpm=1_000_000, rate_classes=SIM_CLASSES)
    try:
        async with run_simulator(sim_config) as sim:
            client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
            try:
                await store.enqueue([*opus, *haiku])
                limiter = ClassLimiter(store, POOL_CLASSES)
                settings = dataclasses.replace(FAST_SETTINGS, concurrency=2, typical_max_tokens=500)
                pool = Pool(store, client, settings, limiter=limiter)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: pool.run(handle_signals=False))
                    await all_succeeded(store, haiku)
                    pool.request_stop(grace=0)
            finally:
                await client.close()
            accounting = sim.accounting()
        for job in haiku:
            assert await store.read_text(job.id) == expected(job)
        opus_states = [(await store.get(j.id)).state for j in opus]
        assert opus_states.count(State.SUCCEEDED) == 1, opus_states  # the rest wait for the refill
        assert [(await store.get(j.id)).attempts for j in opus].count(0) == 2  # never claimed
        assert accounting.requests_by_status.get(429, 0) == 0
    finally:
        await store.close()


async def test_a_429_pauses_only_its_class(tmp_path: Path) -> None:
    """An opus request answered 429 with a long retry-after pauses opus (its bucket row says
    so), and haiku jobs carry on meanwhile."""
    opus = dataclasses.replace(
        spec("opus-429", tokens=100, model=CONTINUATION_MODEL, faults="http_429=1,retry_after=60"), priority=5
    )
    haiku = [spec(f"haiku-{i}", tokens=200, model=PREFILL_MODEL) for i in range(4)]
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        async with run_simulator(SimulatorConfig(rate_classes=SIM_CLASSES)) as sim:
            client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
            try:
                await store.enqueue([opus, *haiku])
                limiter = ClassLimiter(store, POOL_CLASSES)
                attempt = dataclasses.replace(FAST_SETTINGS.attempt, retry_after_max=120)
                settings = dataclasses.replace(FAST_SETTINGS, concurrency=2, attempt=attempt)
                pool = Pool(store, client, settings, limiter=limiter)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: pool.run(handle_signals=False))
                    await all_succeeded(store, haiku)
                    finished_at = time.time()
                    pool.request_stop(grace=0)
            finally:
                await client.close()
            accounting = sim.accounting()
        opus_row = await store.update_buckets(
            "anthropic:opus", POOL_CLASSES.limits_of("opus"), lambda s, n: (s, s)
        )
        default_row = await store.update_buckets("anthropic", POOL_CLASSES.default, lambda s, n: (s, s))
        assert accounting.requests_by_status.get(429, 0) >= 1  # the opus request was refused
        assert opus_row.paused_until > finished_at  # opus still paused when haiku had finished
        assert default_row.paused_until == 0.0
        assert (await store.get(opus.id)).attempts == 1  # tried once, then left alone
        assert pool.pauses.paused_for("opus") > 0 and pool.pauses.paused_for(DEFAULT_CLASS) == 0
    finally:
        await store.close()


async def test_the_runtime_builds_a_limiter_per_class_from_the_config(tmp_path: Path) -> None:
    """``[rate_limits.classes.*]`` in the config file reaches the pool: the runtime's limiter
    knows the classes, and a max_tokens above a class's OTPM stops start-up naming the class."""
    from worker.runtime import make_limits, open_runtime

    path = write(
        tmp_path,
        f'[queue]\nurl = "sqlite:///{tmp_path / "jobs.db"}"\n[anthropic]\nmax_tokens = 500\n'
        '[rate_limits.classes.opus]\nmatch = "claude-opus-*"\noutput_tokens_per_minute = 600\n',
    )
    config = load_config(path, env={})
    async with open_runtime(config, with_client=False) as runtime:
        assert isinstance(runtime.limiter, ClassLimiter)
        assert runtime.limiter.for_model("claude-opus-4-6").max_output_tokens == 600
        assert not runtime.limiter.for_model("claude-haiku-4-5").limited  # the default: unlimited
    too_big = dataclasses.replace(config, anthropic=dataclasses.replace(config.anthropic, max_tokens=601))
    with pytest.raises(ConfigError, match=r"\[rate_limits.classes.opus\]"):
        make_limits(too_big)
