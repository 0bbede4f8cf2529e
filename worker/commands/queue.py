"""Commands that manage jobs: ``status``, ``show``, ``export``, ``retry``, ``cancel``, ``delete``
(``enqueue`` is in :mod:`worker.commands.enqueue`).

Users' scripts rely on these forms and on the JSON shapes documented in each handler, so change
them only by adding. Each handler opens the store from ``[queue] url`` and always closes it.
Errors a user can fix (a bad file, an unknown id, a job in the wrong state) are raised as
``InvalidJobError`` / ``JobNotFoundError`` / ``JobStateError``; the CLI prints them (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from jobs import rules
from jobs.backends import open_store
from jobs.costs import PriceTable, Spend, format_usd, load_prices, token_accounting, totals_spend
from jobs.errors import ConfigError, InvalidJobError
from jobs.export import export_jobs, manifest_entry
from jobs.models import (
    CONTEXT_WINDOW_EXCEEDED,
    TRUNCATED,
    AttemptRecord,
    Job,
    JobSpec,
    State,
    Thinking,
    Totals,
    Transition,
    Usage,
    format_joins,
    stop_sequence_of,
)
from jobs.options import options_dict
from jobs.revise import REVISABLE, parse_changes, revise
from jobs.store import Access, Store
from worker.commands.cost_text import show_cost_lines, spend_text
from worker.config import Config

__all__ = ("register", "opened_store")

_STATE_CHOICES = [*(state.value for state in State), "all"]


#: What ``show`` adds to a truncated job's stop reason.
_TRUNCATION = {
    TRUNCATED: " (truncated: the job's output_budget ran out)",
    CONTEXT_WINDOW_EXCEEDED: " (truncated: the model's context window is full)",
}


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the job commands to the CLI's sub-parsers."""
    status = commands.add_parser("status", parents=[common], help="jobs per state, characters and usage")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=status_command)

    show = commands.add_parser("show", parents=[common], help="one job: attempts, history and text")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--no-text", action="store_true", help="leave out the text")
    show.add_argument(
        "--thinking", action="store_true", help="also the thinking kept per attempt and request"
    )
    show.set_defaults(handler=show_command)
    _register_export(commands, common)
    _register_changes(commands, common)


def _register_export(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``export``: the documents and their manifest, written into a folder."""
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write jobs' text to DIR/<id>.md and DIR/manifest.jsonl",
        description="Each file holds the text exactly as generated. Files are replaced atomically.",
    )
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument(
        "--thinking", action="store_true", help="also <id>.thinking.md: the thinking kept per request"
    )
    export.add_argument(
        "--state",
        action="append",
        choices=_STATE_CHOICES,
        metavar="STATE",
        help=f"jobs to export (repeatable; {', '.join(_STATE_CHOICES)}; default: succeeded)",
    )
    export.add_argument(
        "--clean",
        action="store_true",
        help="remove files in DIR named after jobs of this queue that this export does not include",
    )
    export.set_defaults(handler=export_command)


def _register_changes(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``retry``, ``cancel`` and ``delete``: the commands that change one job (or every failed one)."""
    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="re-queue a failed or cancelled job, optionally repairing its spec",
        description="Re-queue a failed or cancelled job; it resumes from its committed text. "
        "--set FIELD=VALUE (no dot in FIELD) also changes one of the fields that say how it runs: "
        f"{', '.join(REVISABLE)}; VALUE is JSON or plain text, null restores the config's default. "
        "--set SECTION.KEY=VALUE still overrides a setting.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", metavar="JOB_ID", nargs="?")
    which.add_argument("--failed", action="store_true", help="re-queue every failed job")
    retry.set_defaults(handler=retry_command, job_fields_in_set=True)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(handler=cancel_command)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete a succeeded, failed or cancelled job with its text and history",
        description="A queued or running job is refused: cancel it first.",
    )
    delete.add_argument("job_id", metavar="JOB_ID")
    delete.set_defaults(handler=delete_command)


@asynccontextmanager
async def opened_store(config: Config, access: Access = "create") -> AsyncIterator[Store]:
    """The configured store, closed on the way out even when cancelled. Only ``enqueue`` may
    create a queue; the other commands say "no queue at …" where a mistyped URL points."""
    store = open_store(config.queue_url(), access=access)
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


# -- status ------------------------------------------------------------------------------------


def _summed(totals: list[Totals], prices: PriceTable) -> tuple[int, Usage, Spend]:
    """Characters, usage and cost of every job, from the store's aggregate rows (a few per
    model and state, whatever the number of jobs)."""
    usage = Usage()
    for row in totals:
        usage += row.usage
    return sum(row.committed_chars for row in totals), usage, totals_spend(prices, totals)


async def status_command(args: argparse.Namespace, config: Config) -> int:
    """Counts per state and totals. ``--json`` prints one object::

    {"counts": {"queued": int, "running": int, "succeeded": int, "failed": int,
                "cancelled": int},
     "jobs": int, "committed_chars": int,
     "usage": {"input_tokens": int, "output_tokens": int,
               "cache_creation_input_tokens": int, "cache_read_input_tokens": int},
     "next_due": "ISO-8601 UTC" | null,
     "cost_usd": float | null, "waste_usd": float | null,
     "output_tokens": {"billed", "in_document", "wasted", "generated_twice", "estimated"},
     "prices": {"date": str, "source": str}}

    ``usage`` also carries ``estimated_output_tokens``, ``document_tokens`` and
    ``repeated_tokens``. A cost is null when some job's model has no price.
    """
    prices = load_prices(config.prices_path())
    async with opened_store(config, "read") as store:
        totals = await store.totals()
        next_due = await store.next_due()
    counts = rules.counts(totals)
    chars, usage, spend = _summed(totals, prices)
    data = {
        "counts": {str(state): counts[state] for state in State},
        "jobs": sum(counts.values()),
        "committed_chars": chars,
        "usage": usage.as_dict(),
        "next_due": _iso(next_due),
        "cost_usd": spend.total_usd,
        "waste_usd": spend.waste_usd,
        "output_tokens": token_accounting(usage),
        "prices": {"date": prices.date, "source": prices.source},
    }
    if args.json:
        print(json.dumps(data))
        return 0
    for state in State:
        print(f"{state:<10} {counts[state]:>9,}")
    print(f"{'total':<10} {data['jobs']:>9,} jobs, {chars:,} characters")
    print(f"{'usage':<10} {_usage_text(usage)}")
    print(f"{'cost':<10} {spend_text(spend)} (prices of {prices.date})")
    if next_due is not None:
        print(f"{'next due':<10} {_iso(next_due)}")
    return 0


# -- show --------------------------------------------------------------------------------------


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when(at: float | None) -> str:
    return _iso(at) or "-"


def _usage_text(usage: Usage) -> str:
    return (
        f"input {usage.input_tokens:,} · output {usage.output_tokens:,} · "
        f"cache write {usage.cache_creation_input_tokens:,} · "
        f"cache read {usage.cache_read_input_tokens:,} tokens"
    )


def _job_json(job: Job, prices: PriceTable) -> dict[str, Any]:
    spec = job.spec
    return manifest_entry(job, None, prices) | {
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "output_budget": spec.output_budget,
        "max_attempts": spec.max_attempts,
        "priority": spec.priority,
        "run_at": _iso(spec.run_at),
        "metadata": dict(spec.metadata),
        "max_cost_usd": spec.max_cost_usd,
        "prompt_cache": spec.prompt_cache,
        "mode": spec.mode,
        "options": options_dict(spec),
        "stop_sequence": stop_sequence_of(job.stop_reason),
        "lease": None
        if job.lease is None
        else {"owner": job.lease.owner, "expires_at": _iso(job.lease.expires_at)},
    }


def _attempt_json(record: AttemptRecord, job: Job, prices: PriceTable) -> dict[str, Any]:
    return {
        "cost_usd": prices.cost(
            job.spec.model, record.usage, job.spec.prompt_cache, batch=job.spec.mode == "batch"
        ),
        "number": record.number,
        "worker": record.worker,
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "outcome": record.outcome,
        "resume_mode": record.resume_mode,
        "usage": record.usage.as_dict(),
        "requests": record.requests,
        "chars_at_start": record.chars_at_start,
        "chars_at_end": record.chars_at_end,
        "stop_reason": record.stop_reason,
        "error": record.error,
        "time_to_first_token": record.time_to_first_token,
        "joins": dict(record.joins),
    }


def _transition_json(transition: Transition) -> dict[str, Any]:
    return {
        "at": _iso(transition.at),
        "from": transition.from_state,
        "to": transition.to_state,
        "reason": transition.reason,
        "attempt": transition.attempt,
    }


async def show_command(args: argparse.Namespace, config: Config) -> int:
    """One job. ``--json`` prints ``{"job": {...}, "attempts": [...], "history": [...],
    "text": str | null}`` (``text`` is null with ``--no-text``)."""
    prices = load_prices(config.prices_path())
    async with opened_store(config, "read") as store:
        job = await store.get(args.job_id)
        attempts = await store.attempts(job.id)
        history = await store.history(job.id)
        text = None if args.no_text else await store.read_text(job.id)
        thinking = await store.read_thinking(job.id) if args.thinking else None
    if args.json:
        data = {
            "job": _job_json(job, prices),
            "attempts": [_attempt_json(a, job, prices) for a in attempts],
            "history": [_transition_json(t) for t in history],
            "text": text,
        }
        if thinking is not None:
            data["thinking"] = [_thinking_json(t) for t in thinking]
        print(json.dumps(data, ensure_ascii=False))
        return 0
    _print_job(job, prices)
    _print_attempts(job, attempts, prices)
    print("history")
    for t in history:
        print(f"  {_when(t.at)} {t.from_state or '-'} -> {t.to_state}: {t.reason}")
    if thinking is not None:
        _print_thinking(thinking)
    if text is not None:
        print(f"text ({len(text):,} characters)")
        print(text)
    return 0


def _print_job(job: Job, prices: PriceTable) -> None:
    """The job's own fields, one ``name  value`` line each, as ``show`` prints them."""
    spec = job.spec
    print(f"job        {job.id}")
    print(f"state      {job.state} (attempts {job.attempts}, failures {job.failures} of {spec.max_attempts})")
    print(f"model      {spec.model}, max_tokens {spec.max_tokens:,}, output budget {spec.output_budget:,}")
    print(f"mode       {spec.mode}")
    print(f"priority   {spec.priority}" + (f", run at {_iso(spec.run_at)}" if spec.run_at else ""))
    times = (_when(job.created_at), _when(job.started_at), _when(job.finished_at))
    print("created    {}  started {}  finished {}".format(*times))
    if job.lease is not None:
        print(f"lease      {job.lease.owner} until {_iso(job.lease.expires_at)}")
    cut = _TRUNCATION.get(job.stop_reason or "", "")
    options = options_dict(spec)
    if "deadline" in options:
        options["deadline"] = _iso(options["deadline"])
    if options:
        print(
            "options    " + ", ".join(f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in options.items())
        )
    print(f"text       {job.committed_chars:,} characters, stop reason {job.stop_reason or '-'}{cut}")
    print(f"usage      {_usage_text(job.usage)}")
    for line in show_cost_lines(job, prices):
        print(line)
    if job.last_error:
        print(f"last error {job.last_error}")


def _print_attempts(job: Job, attempts: Sequence[AttemptRecord], prices: PriceTable) -> None:
    spec = job.spec
    print("attempts")
    batch = spec.mode == "batch"
    for a in attempts:
        mode = a.resume_mode or "-"
        print(
            f"  #{a.number} {a.worker} {_when(a.started_at)} {a.outcome or 'running'} {mode} "
            f"chars {a.chars_at_start:,}->{a.chars_at_end:,} requests {a.requests} "
            f"in {a.usage.input_tokens:,} out {a.usage.output_tokens:,}"
            f" cost {format_usd(prices.cost(spec.model, a.usage, spec.prompt_cache, batch=batch))}"
            + (f" joins {format_joins(a.joins)}" if a.joins else "")
            + (f" error: {a.error}" if a.error else "")
        )


def _thinking_json(t: Thinking) -> dict[str, Any]:
    return {"attempt": t.attempt, "request": t.request, "chars": t.chars, "cut": t.cut, "text": t.text}


def _print_thinking(thinking: list[Thinking]) -> None:
    """Each request's kept thinking under a header with its size, and whether the bound cut it."""
    print(f"thinking ({len(thinking)} requests)")
    for t in thinking:
        cut = f", cut to {len(t.text):,} by thinking_max_chars" if t.cut else ""
        print(f"  attempt #{t.attempt} request {t.request}: {t.chars:,} characters{cut}")
        for line in t.text.splitlines():
            print(f"    {line}")


# -- export, retry, cancel ---------------------------------------------------------------------


async def export_command(args: argparse.Namespace, config: Config) -> int:
    """Exit 1 if a job was skipped (an unsafe id); each is reported on stderr."""
    chosen = args.state or [State.SUCCEEDED.value]
    states = list(State) if "all" in chosen else [State(name) for name in dict.fromkeys(chosen)]
    async with opened_store(config, "read") as store:
        report = await export_jobs(store, args.out, states, clean=args.clean, thinking=args.thinking)
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    if report.stale:
        verb = "removed" if report.cleaned else "left in place (--clean removes them)"
        names = ", ".join(report.stale[:5]) + (", …" if len(report.stale) > 5 else "")
        print(
            f"{len(report.stale)} file(s) from an earlier export are not in this manifest, {verb}: {names}",
            file=sys.stderr,
        )
    print(f"exported {report.jobs} jobs ({report.files} files) to {args.out}; manifest {report.manifest}")
    return 1 if report.problems else 0


def _job_changes(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The ``--set FIELD=VALUE`` items that name a job field (no dot): the rest are settings."""
    items = [item for item in getattr(args, "set", None) or [] if "." not in item.partition("=")[0]]
    return parse_changes(items)


async def retry_command(args: argparse.Namespace, config: Config) -> int:
    changes, problems = parse_changes(
        [item for item in getattr(args, "set", None) or [] if "." not in item.partition("=")[0]]
    )
    if problems or (changes and args.failed):
        reason = problems or [("--failed", "--set FIELD=VALUE repairs one job: name it")]
        raise ConfigError("; ".join(f"retry --set {field}: {problem}" for field, problem in reason))
    async with opened_store(config, "existing") as store:
        if args.failed:
            count = await store.retry_failed()
            print(f"re-queued {count} failed jobs")
            return 0
        revised = None
        if changes:
            result = revise((await store.get(args.job_id)).spec, changes, config.job_defaults())
            if not isinstance(result, JobSpec):
                raise InvalidJobError(
                    "; ".join(f"job {args.job_id!r}: --set {field}: {problem}" for field, problem in result)
                )
            revised = result
        job = await store.retry(args.job_id, revised)
    changed = f", with {', '.join(sorted(changes))} changed" if changes else ""
    print(f"re-queued {job.id} (resumes from {job.committed_chars:,} characters{changed})")
    return 0


async def cancel_command(args: argparse.Namespace, config: Config) -> int:
    async with opened_store(config, "existing") as store:
        before = await store.get(args.job_id)
        job = await store.cancel(args.job_id)
    note = " (its worker stops at its next checkpoint)" if before.state == State.RUNNING else ""
    print(f"cancelled {job.id}{note}")
    return 0


async def delete_command(args: argparse.Namespace, config: Config) -> int:
    """``deleted ID (STATE, N characters)``; a queued or running job is refused (exit 1)."""
    async with opened_store(config, "existing") as store:
        job = await store.delete(args.job_id)
    print(f"deleted {job.id} ({job.state}, {job.committed_chars:,} characters)")
    return 0
