"""Settings: file, environment and flags, and a clear message for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import ConfigError
from worker.cli import main
from worker.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_loads_and_documents_the_defaults() -> None:
    config = load_config(ROOT / "config.toml", env={})
    default = Config()
    for section in ("anthropic", "queue", "worker", "rate_limits", "logging", "server"):
        assert getattr(config, section) == getattr(default, section), section


def test_every_setting_is_documented_in_the_shipped_config() -> None:
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    default = Config()
    for section in ("anthropic", "queue", "worker", "rate_limits", "logging", "server"):
        for key in type(getattr(default, section)).__dataclass_fields__:
            documented = f"\n{key} = " in text or f"\n# [{section}.{key}." in text  # tables of tables
            assert documented, f"[{section}] {key} is not in config.toml"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 3\ncheckpoint_chars = 10\n")
    config = load_config(
        path,
        env={"LONGFORM_WORKER_CONCURRENCY": "5", "LONGFORM_QUEUE_LEASE_SECONDS": "12.5", "OTHER": "x"},
        overrides={"worker.concurrency": "7"},
    )
    assert config.worker.concurrency == 7
    assert config.worker.checkpoint_chars == 10
    assert config.queue.lease_seconds == 12.5


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[queue]\nurl = "sqlite:///data/jobs.db"\n')
    assert load_config(path, env={}).queue_url() == f"sqlite:///{tmp_path.resolve()}/data/jobs.db"


def test_anthropic_base_url_env_applies_when_config_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    assert Config().api_base_url() == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\nconcurency = 3\n", "unknown key 'concurency' in [worker]"),
        ("[wroker]\n", "unknown section [wroker]"),
        ("[worker]\nconcurrency = 'many'\n", "worker.concurrency must be an integer, got a string"),
        ("[worker]\nconcurrency = 0\n", "worker.concurrency must be at least 1"),
        ("[worker]\nconcurrency = true\n", "worker.concurrency must be an integer, got a boolean"),
        ("[logging]\nformat = 'xml'\n", "logging.format must be one of auto, console, json"),
        ("[worker\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_environment_variables_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LONGFORM_WORKER_NOPE"):
        load_config(None, env={"LONGFORM_WORKER_NOPE": "1"})
    with pytest.raises(ConfigError, match=r"LONGFORM_WORKER_CONCURRENCY: worker\.concurrency must be an int"):
        load_config(None, env={"LONGFORM_WORKER_CONCURRENCY": "lots"})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_cli_reports_bad_config_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = -1\n")
    assert main(["status", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "worker.concurrency must be at least 1" in err
    assert "Traceback" not in err


def test_cli_reports_bad_set_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(write(tmp_path, "")), "--set", "worker.concurrency"]) == 2
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\npoll_seconds = nan\n", "worker.poll_seconds must be a finite number, got nan"),
        ("[queue]\nlease_seconds = inf\n", "queue.lease_seconds must be a finite number, got inf"),
        ("[queue]\nlease_seconds = 1e9\n", "queue.lease_seconds must be at most 86400"),
        ("[worker]\ncheckpoint_seconds = 36000\n", "worker.checkpoint_seconds must be at most 3600"),
        ("[queue]\nmax_attempts = 100000\n", "queue.max_attempts must be at most 1000"),
        ("[anthropic]\nmodel = ''\n", "anthropic.model must name a model"),
        ("[anthropic]\nmodel = 'claude sonnet'\n", "anthropic.model must not contain spaces"),
        ("[anthropic]\nbase_url = 'localhost:8080'\n", "base_url must be an http:// or https:// URL"),
        ("[anthropic]\nbase_url = 'http://127.0.0.1:80x'\n", "anthropic.base_url is not a URL"),
        ("[anthropic]\nbase_url = 'http://127.0.0.1:8080/v1'\n", "anthropic.base_url must not end in /v1"),
        ("[queue]\nurl = 'sqlite://q.db'\n", "queue.url needs three slashes"),
        ("[queue]\nurl = 'redis://localhost'\n", "queue.url has scheme 'redis'"),
        ("[queue]\nurl = 'jobs.db'\n", "queue.url needs a scheme"),
        ("[worker]\nbackoff_base = 10\nbackoff_max = 5\n", "worker.backoff_max (5) must be at least"),
        ("[worker]\nconcurrency = [1]\n", "worker.concurrency must be an integer, got an array [1]"),
    ],
)
def test_values_are_checked_for_what_they_mean(tmp_path: Path, text: str, message: str) -> None:
    """NaN, infinity, absurd durations and malformed URLs stop start-up, naming file and key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_nan_from_environment_and_flags_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"LONGFORM_QUEUE_LEASE_SECONDS: queue\.lease_seconds must be a fi"):
        load_config(None, env={"LONGFORM_QUEUE_LEASE_SECONDS": "nan"})
    with pytest.raises(ConfigError, match=r"flag --set worker\.poll_seconds: .* finite number, got inf"):
        load_config(None, env={}, overrides={"worker.poll_seconds": "inf"})
    with pytest.raises(ConfigError, match="environment variable ANTHROPIC_BASE_URL must not end in /v1"):
        load_config(None, env={"ANTHROPIC_BASE_URL": "https://api.anthropic.com/v1/"})


def test_a_short_flag_is_named_as_typed() -> None:
    message = r"^flag --concurrency: worker\.concurrency must be at least 1, got 0$"
    with pytest.raises(ConfigError, match=message):
        load_config(None, env={}, overrides={"worker.concurrency": ("0", "flag --concurrency")})


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[worker]\nconcurrency = 3\n")
    assert load_config(path, env={}).worker.concurrency == 3


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[worker]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"config\.toml:2: not valid UTF-8"):
        load_config(path, env={})


def test_costs_section_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[costs]\nprices_file = "p.toml"\nprompt_cache = "1h"\nmax_cost_usd = 2\n')
    config = load_config(path, env={})
    assert (config.costs.prompt_cache, config.costs.max_cost_usd) == ("1h", 2.0)
    assert config.prices_path() == tmp_path / "p.toml"
    with pytest.raises(ConfigError, match=r"costs.prompt_cache must be one of off, 5m, 1h"):
        load_config(path, env={"LONGFORM_COSTS_PROMPT_CACHE": "always"})
    with pytest.raises(ConfigError, match=r"costs.daily_cap_usd must be at least 0"):
        load_config(path, env={"LONGFORM_COSTS_DAILY_CAP_USD": "-1"})
