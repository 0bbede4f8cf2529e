# ruff: noqa: E501 - a case is easiest to read, and to check against its message, on its own lines.
"""The bad inputs of ``tests/test_bad_inputs.py``: what a careless or hostile new user types.

Each case is a command line run as ``python -m worker …`` in a fresh folder holding the case's
files (``config.toml`` among them, unless the case brings its own), optionally a queue
(``q.db``: job ``a`` queued, ``done`` succeeded with text, ``gone`` cancelled). ``where`` is the
text that must appear in the output: the place to fix (FILE:LINE: field, a config key and where
it came from, a job id, a path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ("Case", "CASES", "CONFIG", "READ_ONLY")

#: The default config of a case: a queue file beside it.
CONFIG = '[queue]\nurl = "sqlite:///q.db"\n'

#: Commands that must not change anything on disk.
READ_ONLY = frozenset({"status", "show", "export", "schedule"})


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    code: int
    where: str
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    #: Create the queue ``q.db`` (see the module docstring) before running.
    queue: bool = False

    @property
    def leaves_disk_alone(self) -> bool:
        """A command that only reads changes nothing (``export`` writes only its --out folder, so
        only when it fails); nor does any command that fails before it has a queue to open."""
        if self.argv[0] == "export":
            return self.code != 0
        return self.argv[0] in READ_ONLY or (self.code != 0 and not self.queue)


def _config(text: str) -> dict[str, bytes]:
    return {"config.toml": text.encode()}


def _jobs(*lines: object) -> dict[str, bytes]:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    return {"config.toml": CONFIG.encode(), "jobs.jsonl": text.encode()}


def _config_case(name: str, toml: str, where: str, command: tuple[str, ...] = ("status",)) -> Case:
    text = CONFIG + toml.removeprefix("[queue]\n") if toml.startswith("[queue]\n") else CONFIG + toml
    return Case(name, command, 2, where, files=_config(text))


def _env_case(name: str, env: dict[str, str], where: str) -> Case:
    return Case(name, ("status",), 2, where, files=_config(CONFIG), env=env)


def _flag_case(name: str, flags: tuple[str, ...], where: str, command: str = "status") -> Case:
    return Case(name, (command, *flags), 2, where, files=_config(CONFIG))


def _line_case(name: str, line: object, where: str, code: int = 1) -> Case:
    return Case(name, ("enqueue", "jobs.jsonl"), code, where, files=_jobs(line))


_PROMPT = {"prompt": "Write."}
_USER = {"role": "user", "content": "Write."}

CONFIG_CASES = [
    _config_case(
        "unknown key", "[worker]\nconcurency = 3\n", "config.toml: [worker]: unknown key 'concurency'"
    ),
    _config_case("unknown section", "[wroker]\n", "config.toml: unknown section [wroker]"),
    _config_case(
        "text for an integer", "[worker]\nconcurrency = 'many'\n", "worker.concurrency must be an integer"
    ),
    _config_case("boolean for an integer", "[worker]\nconcurrency = true\n", "got a boolean True"),
    _config_case(
        "concurrency 0", "[worker]\nconcurrency = 0\n", "[worker] concurrency: worker.concurrency must be"
    ),
    _config_case(
        "poll_seconds nan", "[worker]\npoll_seconds = nan\n", "worker.poll_seconds must be a finite"
    ),
    _config_case(
        "lease_seconds inf", "[queue]\nlease_seconds = inf\n", "queue.lease_seconds must be a finite"
    ),
    _config_case(
        "lease of a year", "[queue]\nlease_seconds = 31536000\n", "queue.lease_seconds must be at most"
    ),
    _config_case("grace of -1", "[worker]\ngrace_seconds = -1\n", "worker.grace_seconds must be at least 0"),
    _config_case(
        "config max_tokens 0", "[anthropic]\nmax_tokens = 0\n", "anthropic.max_tokens must be at least 1"
    ),
    _config_case(
        "negative rpm", "[rate_limits]\nrequests_per_minute = -5\n", "rate_limits.requests_per_minute"
    ),
    _config_case(
        "rate class without match",
        "[rate_limits.classes.opus]\noutput_tokens_per_minute = 600\n",
        "[rate_limits.classes.opus]: match must be a glob",
    ),
    _config_case(
        "backoff upside down", "[worker]\nbackoff_base = 9\nbackoff_max = 1\n", "worker.backoff_max (1)"
    ),
    _config_case("log format xml", "[logging]\nformat = 'xml'\n", "logging.format must be one of"),
    _config_case("sdk level loud", "[logging]\nsdk_level = 'loud'\n", "logging.sdk_level must be one of"),
    _config_case("empty model", "[anthropic]\nmodel = ''\n", "anthropic.model must name a model"),
    _config_case(
        "base_url without scheme", "[anthropic]\nbase_url = 'localhost:8080'\n", "anthropic.base_url must be"
    ),
    _config_case(
        "base_url bad port", "[anthropic]\nbase_url = 'http://localhost:80x'\n", "base_url is not a URL"
    ),
    _config_case(
        "base_url /v1", "[anthropic]\nbase_url = 'http://localhost:8080/v1'\n", "must not end in /v1"
    ),
    _config_case(
        "transport curl", "[anthropic]\nhttp_transport = 'curl'\n", "anthropic.http_transport must be"
    ),
    Case("bad TOML", ("status",), 2, "config.toml: not valid TOML", files=_config("[worker\n")),
    Case(
        "config not UTF-8",
        ("status",),
        2,
        "config.toml:2: not valid UTF-8",
        files={"config.toml": b"#\n\xff\n"},
    ),
    Case("config missing", ("status", "--config", "nope.toml"), 2, "nope.toml: config file not found"),
    Case("config is a folder", ("status", "--config", "."), 2, ".: is a folder, not a config file"),
    Case(
        "queue url two slashes",
        ("status",),
        2,
        "queue.url needs three slashes",
        files=_config('[queue]\nurl = "sqlite://q.db"\n'),
    ),
    Case(
        "queue url redis",
        ("status",),
        2,
        "queue.url has scheme 'redis'",
        files=_config('[queue]\nurl = "redis://x"\n'),
    ),
    Case(
        "queue url no scheme",
        ("status",),
        2,
        "queue.url needs a scheme",
        files=_config('[queue]\nurl = "q.db"\n'),
    ),
    Case(
        "schedules not tables",
        ("schedule", "list"),
        2,
        "schedules must be an array of tables",
        files=_config("schedules = 3\n" + CONFIG),
    ),
]

ENV_AND_FLAG_CASES = [
    _env_case(
        "env unknown setting", {"LONGFORM_WORKER_NOPE": "1"}, "environment variable LONGFORM_WORKER_NOPE"
    ),
    _env_case(
        "env text for integer", {"LONGFORM_WORKER_CONCURRENCY": "lots"}, "LONGFORM_WORKER_CONCURRENCY: worker"
    ),
    _env_case(
        "env nan",
        {"LONGFORM_QUEUE_LEASE_SECONDS": "nan"},
        "LONGFORM_QUEUE_LEASE_SECONDS: queue.lease_seconds",
    ),
    _env_case(
        "env no section", {"LONGFORM_COLOUR": "red"}, "environment variable LONGFORM_COLOUR: no such setting"
    ),
    _env_case(
        "ANTHROPIC_BASE_URL /v1", {"ANTHROPIC_BASE_URL": "https://x.test/v1"}, "ANTHROPIC_BASE_URL must not"
    ),
    _flag_case(
        "--set without =", ("--set", "worker.concurrency"), "flag --set 'worker.concurrency': expected"
    ),
    _flag_case(
        "--set unknown section", ("--set", "nope.key=1"), "flag --set nope.key: unknown section 'nope'"
    ),
    _flag_case(
        "--set unknown key", ("--set", "worker.speed=1"), "flag --set worker.speed: unknown key 'speed'"
    ),
    _flag_case(
        "--set inf", ("--set", "worker.idle_timeout=inf"), "flag --set worker.idle_timeout: worker.idle"
    ),
    _flag_case(
        "--queue-url bad", ("--queue-url", "sqlite://x.db"), "flag --queue-url: queue.url needs three"
    ),
    _flag_case("--model empty", ("--model", ""), "flag --model: anthropic.model must name a model"),
    _flag_case(
        "--base-url /v1", ("--base-url", "http://h:1/v1"), "flag --base-url: anthropic.base_url must not"
    ),
    _flag_case("--log-level loud", ("--log-level", "loud"), "--log-level: invalid choice: 'loud'"),
    _flag_case(
        "--concurrency 0", ("--concurrency", "0"), "flag --concurrency: worker.concurrency must be", "run"
    ),
    _flag_case("--concurrency text", ("--concurrency", "x"), "--concurrency: invalid int value: 'x'", "run"),
    Case("unknown command", ("frobnicate",), 2, "invalid choice: 'frobnicate'", files=_config(CONFIG)),
    Case(
        "run without a key",
        ("run", "--until-empty"),
        2,
        "ANTHROPIC_API_KEY is not set",
        files=_config(CONFIG),
        env={"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": ""},
    ),
]

NO_QUEUE_CASES = [
    Case("status, no queue", ("status",), 2, "no queue at ", files=_config(CONFIG)),
    Case(
        "status, no folder",
        ("status",),
        2,
        "no queue at ",
        files=_config('[queue]\nurl = "sqlite:///typo/q.db"\n'),
    ),
    Case("status --json, no queue", ("status", "--json"), 2, "no queue at ", files=_config(CONFIG)),
    Case("show, no queue", ("show", "a"), 2, "no queue at ", files=_config(CONFIG)),
    Case("export, no queue", ("export", "--out", "docs"), 2, "no queue at ", files=_config(CONFIG)),
    Case("retry, no queue", ("retry", "a"), 2, "no queue at ", files=_config(CONFIG)),
    Case("retry --failed, no queue", ("retry", "--failed"), 2, "no queue at ", files=_config(CONFIG)),
    Case("cancel, no queue", ("cancel", "a"), 2, "no queue at ", files=_config(CONFIG)),
    Case(
        "queue url is a folder",
        ("status",),
        2,
        "(a folder, not a database file",
        files={**_config('[queue]\nurl = "sqlite:///sub"\n'), "sub/x": b""},
    ),
    Case(
        "queue file empty",
        ("status",),
        2,
        "(the file holds no job tables)",
        files={**_config(CONFIG), "q.db": b""},
    ),
    Case(
        "queue file not a database",
        ("status",),
        1,
        "q.db): file is not a database",
        files={**_config(CONFIG), "q.db": b"hello" * 200},
    ),
]

ENQUEUE_FILE_CASES = [
    Case(
        "file missing",
        ("enqueue", "nope.jsonl"),
        1,
        "nope.jsonl: cannot read: No such file",
        files=_config(CONFIG),
    ),
    Case("file is a folder", ("enqueue", "."), 1, ".: cannot read: Is a directory", files=_config(CONFIG)),
    Case(
        "file empty",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl: no jobs (the input is empty)",
        files={**_config(CONFIG), "jobs.jsonl": b""},
    ),
    Case(
        "blank lines only",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl: no jobs",
        files={**_config(CONFIG), "jobs.jsonl": b"\n  \n\n"},
    ),
    Case("stdin empty", ("enqueue", "-"), 1, "<stdin>: no jobs (the input is empty)", files=_config(CONFIG)),
    Case(
        "stdin bad line",
        ("enqueue", "-"),
        1,
        "<stdin>:2: prompt: must not be empty",
        files=_config(CONFIG),
        stdin=b'{"prompt": "x"}\n{"prompt": ""}\n',
    ),
    _line_case("not JSON", "{oops", "jobs.jsonl:1: line: not valid JSON (Expecting property name"),
    _line_case(
        "NaN", '{"prompt": "x", "priority": NaN}', "jobs.jsonl:1: line: not valid JSON (NaN is not allowed)"
    ),
    _line_case(
        "Infinity",
        '{"prompt": "x", "priority": -Infinity}',
        "jobs.jsonl:1: line: not valid JSON (-Infinity is not",
    ),
    _line_case(
        "control character", '{"prompt": "a\tb"}', "not valid JSON (Invalid control character at column"
    ),
    _line_case(
        "5000 digits",
        '{"prompt": "x", "max_tokens": ' + "7" * 5000 + "}",
        "jobs.jsonl:1: line: not valid JSON (an integer with more than 4300 digits)",
    ),
    _line_case(
        "nested too deeply",
        '{"prompt": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "jobs.jsonl:1: line: not valid JSON (nested too deeply)",
    ),
    Case(
        "bad UTF-8",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl:1: line: not valid UTF-8",
        files={**_config(CONFIG), "jobs.jsonl": b'{"prompt": "\xff"}\n'},
    ),
    _line_case("array line", [1, 2], "jobs.jsonl:1: line: must be a JSON object, got a list"),
    _line_case("string line", '"x"', "jobs.jsonl:1: line: must be a JSON object, got a string"),
    _line_case("no prompt", {"id": "a"}, 'jobs.jsonl:1: prompt: one of "prompt" or "messages" is required'),
    _line_case(
        "prompt and messages",
        {"prompt": "x", "messages": [_USER]},
        'jobs.jsonl:1: messages: give "prompt" or "messages", not both',
    ),
    _line_case("empty prompt", {"prompt": ""}, "jobs.jsonl:1: prompt: must not be empty"),
    _line_case(
        "whitespace prompt", {"prompt": " \n\t "}, "jobs.jsonl:1: prompt: must not be only whitespace"
    ),
    _line_case("prompt a list", {"prompt": ["x"]}, "jobs.jsonl:1: prompt: must be a string, got a list"),
    _line_case(
        "lone surrogate",
        '{"prompt": "bad \\ud800 text"}',
        "jobs.jsonl:1: prompt: contains a lone surrogate (\\ud800)",
    ),
    _line_case(
        "surrogate in metadata",
        '{"prompt": "x", "metadata": {"k": "\\udfff"}}',
        "jobs.jsonl:1: metadata.k: contains a lone surrogate",
    ),
    _line_case(
        "messages empty",
        {"messages": []},
        "jobs.jsonl:1: messages: must be a non-empty list of messages, got an empty list",
    ),
    _line_case(
        "messages a string",
        {"messages": "hi"},
        "jobs.jsonl:1: messages: must be a non-empty list of messages, got a string",
    ),
    _line_case(
        "message a string",
        {"messages": ["hi"]},
        "jobs.jsonl:1: messages[0]: must be an object with role and content",
    ),
    _line_case(
        "role system",
        {"messages": [{"role": "system", "content": "x"}]},
        'jobs.jsonl:1: messages[0].role: must be "user" or "assistant", got "system"',
    ),
    _line_case(
        "assistant first",
        {"messages": [{"role": "assistant", "content": "x"}]},
        "jobs.jsonl:1: messages[0].role: the first message",
    ),
    _line_case(
        "content empty",
        {"messages": [{"role": "user", "content": ""}]},
        "jobs.jsonl:1: messages[0].content: must not be empty",
    ),
    _line_case(
        "content whitespace",
        {"messages": [{"role": "user", "content": "  "}]},
        "jobs.jsonl:1: messages[0].content: must not be only whitespace",
    ),
    _line_case(
        "content an unknown block type",
        {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
        'jobs.jsonl:1: messages[0].content[0].type: unknown block type "audio" (known: text, image, document)',
    ),
    _line_case(
        "message extra field",
        {"messages": [{**_USER, "name": "n"}]},
        "jobs.jsonl:1: messages[0].name: unknown field",
    ),
    _line_case(
        "prefill on a no-prefill model",
        {"model": "claude-opus-4-6", "messages": [_USER, {"role": "assistant", "content": "Once"}]},
        "jobs.jsonl:1: messages[1].role: model claude-opus-4-6 does not accept a final assistant turn",
    ),
    _line_case(
        "prefill ends in whitespace",
        {"model": "claude-sonnet-4-5", "messages": [_USER, {"role": "assistant", "content": "Once upon "}]},
        "jobs.jsonl:1: messages[1].content: a final assistant turn must not end in whitespace",
    ),
    _line_case(
        "unknown field",
        {**_PROMPT, "colour": "red"},
        "jobs.jsonl:1: colour: unknown field (known: id, prompt,",
    ),
    _line_case(
        "id with a path",
        {**_PROMPT, "id": "../../etc/passwd"},
        "jobs.jsonl:1: id: must be 1-200 characters of A-Z a-z 0-9 . _ - and not start with '.', got \"../../etc/passwd\"",
    ),
    _line_case(
        "id hidden",
        {**_PROMPT, "id": ".x"},
        "jobs.jsonl:1: id: must be 1-200 characters of A-Z a-z 0-9 . _ - and not start with '.', got \".x\"",
    ),
    _line_case("id too long", {**_PROMPT, "id": "a" * 201}, "jobs.jsonl:1: id: must be 1-200 characters"),
    _line_case(
        "id a number",
        {**_PROMPT, "id": 7},
        "jobs.jsonl:1: id: must be 1-200 characters of A-Z a-z 0-9 . _ - and not start with '.', got 7",
    ),
    _line_case("model empty", {**_PROMPT, "model": ""}, "jobs.jsonl:1: model: must not be empty"),
    _line_case(
        "system a number", {**_PROMPT, "system": 5}, "jobs.jsonl:1: system: must be a string, got an integer"
    ),
    _line_case(
        "max_tokens 0",
        {**_PROMPT, "max_tokens": 0},
        "jobs.jsonl:1: max_tokens: must be a positive integer, got 0",
    ),
    _line_case(
        "output_budget a float",
        {**_PROMPT, "output_budget": 1.5},
        "jobs.jsonl:1: output_budget: must be an integer, got a number",
    ),
    _line_case(
        "max_attempts text",
        {**_PROMPT, "max_attempts": "3"},
        "jobs.jsonl:1: max_attempts: must be an integer, got a string",
    ),
    _line_case(
        "priority 2**70", {**_PROMPT, "priority": 2**70}, "jobs.jsonl:1: priority: must fit in 64 bits"
    ),
    _line_case(
        "run_at tomorrow",
        {**_PROMPT, "run_at": "tomorrow"},
        "jobs.jsonl:1: run_at: must be an ISO 8601 date and time with an offset",
    ),
    _line_case(
        "run_at naive",
        {**_PROMPT, "run_at": "2030-01-01T09:00"},
        "jobs.jsonl:1: run_at: needs a UTC offset, e.g. 2030-01-01T09:00Z",
    ),
    _line_case(
        "run_at date only",
        {**_PROMPT, "run_at": "2030-01-01"},
        "jobs.jsonl:1: run_at: a date alone is not a time: give one with an offset, e.g. 2030-01-01T00:00:00Z",
    ),
    _line_case(
        "run_at date with offset",
        {**_PROMPT, "run_at": "2030-01-01+00:00"},
        "jobs.jsonl:1: run_at: a date alone is not a time",
    ),
    _line_case(
        "run_at date Z",
        {**_PROMPT, "run_at": "2030-01-01Z"},
        "jobs.jsonl:1: run_at: must be an ISO 8601 date and time",
    ),
    _line_case(
        "run_at milliseconds",
        {**_PROMPT, "run_at": 1.9e12},
        "jobs.jsonl:1: run_at: must be a time in epoch seconds, got 1900000000000.0 (milliseconds? use seconds)",
    ),
    _line_case(
        "run_at negative",
        {**_PROMPT, "run_at": -1},
        "jobs.jsonl:1: run_at: must be a time in epoch seconds, got -1",
    ),
    _line_case(
        "metadata a list",
        {**_PROMPT, "metadata": [1]},
        "jobs.jsonl:1: metadata: must be an object, got a list",
    ),
    Case(
        "duplicate ids",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl:2: id: duplicate of line 1 ('x')",
        files=_jobs({**_PROMPT, "id": "x"}, {**_PROMPT, "id": "x"}),
    ),
    Case(
        "problems on several lines",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl:3: max_tokens",
        files=_jobs(_PROMPT, {"id": "b"}, {**_PROMPT, "max_tokens": -1}),
    ),
    Case(
        "config default model rejects prefill",
        ("enqueue", "jobs.jsonl"),
        1,
        "messages[1].role: model claude-sonnet-5-5 does not accept",
        files={
            **_jobs({"messages": [_USER, {"role": "assistant", "content": "Once"}]}),
            "config.toml": (CONFIG + '[anthropic]\nmodel = "claude-sonnet-5-5"\n').encode(),
        },
    ),
]

QUEUE_CASES = [
    Case("show unknown id", ("show", "nobody"), 1, "no job with id 'nobody'", queue=True),
    Case("show --json unknown id", ("show", "nobody", "--json"), 1, "no job with id 'nobody'", queue=True),
    Case(
        "retry a queued job",
        ("retry", "a"),
        1,
        "job 'a' is queued: only failed or cancelled jobs can be retried",
        queue=True,
    ),
    Case("cancel a cancelled job", ("cancel", "gone"), 1, "job 'gone' is cancelled", queue=True),
    Case("cancel unknown id", ("cancel", "nobody"), 1, "no job with id 'nobody'", queue=True),
    Case(
        "export --out is a file",
        ("export", "--out", "taken"),
        1,
        "cannot export to taken: taken is a file, not a folder",
        files={"taken": b"mine"},
        queue=True,
    ),
    Case(
        "export --out under a file",
        ("export", "--out", "taken/docs"),
        1,
        "cannot export to taken/docs: taken is a file, not a folder",
        files={"taken": b"mine"},
        queue=True,
    ),
    Case(
        "export --state bogus",
        ("export", "--out", "docs", "--state", "bogus"),
        2,
        "--state: invalid choice: 'bogus'",
        queue=True,
    ),
    Case(
        "re-enqueue different content",
        ("enqueue", "jobs.jsonl"),
        1,
        "jobs.jsonl: id 'a': exists with different content (messages)",
        files={"jobs.jsonl": b'{"id": "a", "prompt": "Something else."}\n'},
        queue=True,
    ),
    Case(
        "replace a finished job",
        ("enqueue", "jobs.jsonl", "--replace"),
        1,
        "job 'done' has started (succeeded, 1 attempt(s))",
        files={"jobs.jsonl": b'{"id": "done", "prompt": "Again."}\n'},
        queue=True,
    ),
    Case(
        "migrate with a bad url",
        ("migrate", "--queue-url", "sqlite:/x.db"),
        2,
        "flag --queue-url: queue.url needs a scheme",
        queue=True,
    ),
]

#: Inputs that are fine and must stay fine (exit 0), checked the same way.
GOOD_CASES = [
    Case(
        "config with a BOM",
        ("status",),
        0,
        "queued",
        files={"config.toml": b"\xef\xbb\xbf" + CONFIG.encode()},
        queue=True,
    ),
    Case("status of a queue", ("status", "--json"), 0, '"queued": 1', queue=True),
    Case("show a job", ("show", "done", "--json"), 0, '"id": "done"', queue=True),
    Case("export", ("export", "--out", "docs"), 0, "exported 1 jobs (1 files) to docs", queue=True),
    Case(
        "re-enqueue the same content",
        ("enqueue", "jobs.jsonl"),
        0,
        "enqueued 0 jobs (1 already existed)",
        files={"jobs.jsonl": b'{"id": "a", "prompt": "Write a."}\n'},
        queue=True,
    ),
]

CASES: list[Case] = [
    *CONFIG_CASES,
    *ENV_AND_FLAG_CASES,
    *NO_QUEUE_CASES,
    *ENQUEUE_FILE_CASES,
    *QUEUE_CASES,
    *GOOD_CASES,
]
