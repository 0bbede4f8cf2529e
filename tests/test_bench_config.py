"""The benchmarks' configs are the ones a user's ``run`` would load, and reach the composition root.

``bench.common.bench_config`` must validate every setting as a flag would, never read the shell's
``./config.toml`` or ``LONGFORM_*`` variables (they would change what a benchmark measures), and
carry ``[rate_limits.classes.*]`` from its TOML text; ``Runtime.pool(record_lags=True)`` is what
``bench.concurrency`` needs for its p99.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import Setting, bench_config
from jobs.errors import ConfigError
from worker.class_limits import ClassLimiter
from worker.limits import FleetLimiter
from worker.runtime import open_runtime, pool_settings

SIM = "http://127.0.0.1:9"  # never contacted: building a client opens no connection


def test_settings_arrive_as_flags_and_the_shell_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = tmp_path / "shell"
    shell.mkdir()
    (shell / "config.toml").write_text("[worker]\ncheckpoint_chars = 5\n", encoding="utf-8")
    monkeypatch.chdir(shell)
    monkeypatch.setenv("LONGFORM_WORKER_BACKOFF_BASE", "7")
    bench = tmp_path / "bench"
    bench.mkdir()
    settings: dict[str, Setting] = {
        "worker.concurrency": 16,
        "worker.poll_seconds": 0.02,
        "anthropic.http_transport": "httpx",
    }
    config = bench_config(bench, "waste", SIM, settings)
    assert config.queue_url() == f"sqlite:///{bench.resolve() / 'waste.db'}"
    assert config.api_base_url() == SIM
    assert config.source == (bench / "waste.toml").resolve()
    assert config.anthropic.http_transport == "httpx"
    made = pool_settings(config)
    assert (made.concurrency, made.poll_seconds) == (16, 0.02)
    # Neither ./config.toml's checkpoint_chars nor the environment's backoff_base got in.
    assert (made.checkpoint_chars, made.attempt.backoff_base) == (2000, 1.0)


def test_a_bad_setting_is_refused_naming_its_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"flag --set worker\.poll_seconds: .*at least 0\.01"):
        bench_config(tmp_path, "bad", SIM, {"worker.poll_seconds": 0.001})
    with pytest.raises(ConfigError, match=r"rate_limits\.classes can only be set in the config file"):
        bench_config(tmp_path, "bad", SIM, {"rate_limits.classes": "opus"})


async def test_classes_come_from_the_toml_text_and_limits_from_settings(tmp_path: Path) -> None:
    limits = {"rate_limits.requests_per_minute": 120, "rate_limits.output_tokens_per_minute": 30_000}
    toml = '[rate_limits.classes.opus]\nmatch = "claude-opus-*"\noutput_tokens_per_minute = 15000\n'
    classed = bench_config(tmp_path, "classes", SIM, {**limits, "anthropic.max_tokens": 4000}, toml=toml)
    async with open_runtime(classed, with_client=False) as runtime:
        assert isinstance(runtime.limiter, ClassLimiter)
        assert runtime.limiter.for_model("claude-opus-4-6").max_output_tokens == 15_000
        assert runtime.limiter.for_model("claude-haiku-4-5").max_output_tokens == 30_000
    one = bench_config(tmp_path, "one", SIM, limits)
    async with open_runtime(one, with_client=False) as runtime:
        assert isinstance(runtime.limiter, FleetLimiter)
        assert runtime.limiter.limits.output_tokens == 30_000


async def test_a_pool_records_checkpoint_lags_only_when_asked(tmp_path: Path) -> None:
    async with open_runtime(bench_config(tmp_path, "lags", SIM, {"worker.concurrency": 3})) as runtime:
        recording = runtime.pool(record_lags=True)
        assert recording.writer.stats.lags == []
        assert recording.settings.concurrency == 3
        assert runtime.pool().writer.stats.lags is None
