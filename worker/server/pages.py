"""The dashboard's HTML, rendered on the server from plain string templates.

Why no template engine: a dozen small fragments, each a function of plain data with every value
passed through :func:`html.escape`, need no dependency and no build step. The pages work without
JavaScript (filters, paging, download); ``static/dashboard.js`` adds the live parts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from jobs.buckets import BucketState
from jobs.costs import Spend, format_usd
from jobs.models import TERMINAL_STATES, AttemptRecord, FleetView, Job, State, Transition

__all__ = (
    "layout",
    "login_page",
    "jobs_page",
    "jobs_rows",
    "counts_html",
    "job_page",
    "job_panel",
    "fleet_panel",
)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    return f'<time datetime="{_e(stamp)}Z">{_e(stamp)}</time>'


def job_href(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


def layout(title: str, body: str, *, csrf: str | None, page: str) -> str:
    nav = ""
    if csrf is not None:
        links = [("jobs", "/", "Jobs"), ("fleet", "/fleet", "Fleet")]
        current = ' aria-current="page"'
        items = "".join(
            f'<a href="{href}"{current if key == page else ""}>{label}</a>' for key, href, label in links
        )
        nav = (
            f'<nav aria-label="Main">{items}'
            '<form method="post" action="/logout" class="logout">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            '<button type="submit">Log out</button></form></nav>'
        )
    meta = f'<meta name="csrf-token" content="{_e(csrf)}">' if csrf else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)} · longform</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        f'<body data-page="{_e(page)}"><header><strong>longform</strong>{nav}</header>'
        f"<main>{body}</main></body></html>"
    )


def login_page(error: str | None = None) -> str:
    alert = f'<p role="alert" class="error">{_e(error)}</p>' if error else ""
    body = (
        "<h1>Log in</h1>"
        f"{alert}"
        '<form method="post" action="/login" class="login">'
        '<label for="token">Server token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Log in</button></form>'
        "<p>The token is <code>[server] token</code>, <code>LONGFORM_SERVER_TOKEN</code>, or the one "
        "<code>serve</code> printed at its first start.</p>"
    )
    return layout("Log in", body, csrf=None, page="login")


def counts_html(counts: Mapping[State, int]) -> str:
    cells = "".join(
        f'<li class="count state-{s.value}"><span>{s.value}</span>'
        f' <strong data-count="{s.value}">{counts.get(s, 0):,}</strong></li>'
        for s in State
    )
    total = sum(counts.values())
    total_cell = f"<li>total <strong>{total:,}</strong></li>"
    return f'<ul class="counts" aria-label="Jobs per state">{cells}{total_cell}</ul>'


def _select(name: str, label: str, options: Sequence[tuple[str, str]], chosen: str) -> str:
    opts = "".join(
        f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(text)}</option>'
        for v, text in options
    )
    return f'<label>{label} <select name="{name}" id="f-{name}">{opts}</select></label>'


_SORTS = [
    ("id", "id ascending"),
    ("-id", "id descending"),
    ("-created", "newest first"),
    ("created", "oldest first"),
]
SORT_KEYS = frozenset(key for key, _ in _SORTS)


def _filters(params: Mapping[str, str]) -> str:
    states = [("", "any"), *((s.value, s.value) for s in State)]
    return (
        '<form method="get" action="/" class="filters" id="filters" role="search">'
        f"{_select('state', 'State', states, params.get('state', ''))}"
        f'<label>Model <input name="model" id="f-model" value="{_e(params.get("model", ""))}"></label>'
        '<label>Id, schedule or metadata <input name="q" id="f-q" type="search" '
        'placeholder="id prefix, schedule name, or metadata text" '
        f'value="{_e(params.get("q", ""))}"></label>'
        f"{_select('sort', 'Sort', _SORTS, params.get('sort', 'id'))}"
        '<button type="submit">Apply</button></form>'
    )


def jobs_rows(jobs: Iterable[Job], spends: Mapping[str, Spend]) -> str:
    rows = [
        (
            f'<tr data-job="{_e(job.id)}"><td><a href="{job_href(job.id)}">{_e(job.id)}</a></td>'
            f'<td><span class="state state-{job.state.value}">{job.state.value}</span></td>'
            f"<td>{_e(job.spec.model)}</td><td>{_e(job.spec.mode)}</td>"
            f"<td class=num>{job.committed_chars:,}</td>"
            f"<td class=num>{job.attempts}</td><td class=num>{format_usd(spends[job.id].total_usd)}</td>"
            f"<td>{_when(job.updated_at)}</td></tr>"
        )
        for job in jobs
    ]
    return "".join(rows) or '<tr><td colspan="8">No job matches.</td></tr>'


def pager(params: Mapping[str, str], next_after: str | None) -> str:
    links = []
    if params.get("after"):
        first = {k: v for k, v in params.items() if k != "after" and v}
        links.append(f'<a href="/?{_e(urlencode(first))}">First page</a>')
    if next_after is not None:
        nxt = {**{k: v for k, v in params.items() if v}, "after": next_after}
        links.append(f'<a href="/?{_e(urlencode(nxt))}" rel="next">Next page</a>')
    return f'<nav class="pager" aria-label="Pages" id="pager">{" ".join(links)}</nav>'


def jobs_page(counts: str, rows: str, pages: str, params: Mapping[str, str], csrf: str) -> str:
    body = (
        '<h1>Jobs</h1><div id="counts" aria-live="polite">'
        f"{counts}</div>{_filters(params)}"
        '<div class="table-wrap"><table><caption class="sr-only">Jobs</caption><thead><tr>'
        "<th scope=col>Id</th><th scope=col>State</th><th scope=col>Model</th><th scope=col>Mode</th>"
        "<th scope=col>Characters</th><th scope=col>Attempts</th><th scope=col>Cost</th>"
        f'<th scope=col>Updated (UTC)</th></tr></thead><tbody id="job-rows">{rows}</tbody></table></div>'
        f'<div id="pager-wrap">{pages}</div><p class="live" id="live-status" aria-live="polite"></p>'
    )
    return layout("Jobs", body, csrf=csrf, page="jobs")


def _timeline(attempts: Sequence[AttemptRecord], history: Sequence[Transition]) -> str:
    items: list[tuple[float, str]] = []
    for t in history:
        what = f"{_e(t.from_state or 'new')} → <strong>{_e(t.to_state)}</strong>: {_e(t.reason)}"
        if t.attempt:
            what += f" (attempt {t.attempt})"
        items.append((t.at, what))
    for a in attempts:
        joins = ", ".join(f"{rule}×{count}" for rule, count in a.joins) or "none"
        text = (
            f"attempt {a.number} claimed by <code>{_e(a.worker)}</code>, resume mode "
            f"<strong>{_e(a.resume_mode or 'pending')}</strong>, join rules {_e(joins)}, "
            f"characters {a.chars_at_start:,} → {a.chars_at_end or a.chars_at_start:,}"
        )
        items.append((a.started_at, text))
        if a.ended_at is not None:
            end = f"attempt {a.number} ended: <strong>{_e(a.outcome)}</strong>"
            if a.error:
                end += f" ({_e(a.error)})"
            items.append((a.ended_at, end))
    items.sort(key=lambda item: item[0])
    lines = "".join(f"<li>{_when(at)} {text}</li>" for at, text in items)
    return f'<ol class="timeline" id="timeline">{lines}</ol>'


def job_panel(
    job: Job, attempts: Sequence[AttemptRecord], history: Sequence[Transition], spend: Spend
) -> tuple[str, str]:
    """The parts of the job page that change with its state (re-fetched on each state event): the
    head (state and actions, above the document) and the details (usage, cost, timeline, below)."""
    usage = "".join(
        f"<tr><th scope=row>{_e(k)}</th><td class=num>{v:,}</td></tr>" for k, v in job.usage.as_dict().items()
    )
    error = f'<p class="error">Last error: {_e(job.last_error)}</p>' if job.last_error else ""
    can_cancel = job.state not in TERMINAL_STATES
    can_retry = job.state in (State.FAILED, State.CANCELLED)
    return (
        f'<p>State <span class="state state-{job.state.value}" id="job-state">{job.state.value}</span> · '
        f"model {_e(job.spec.model)} · mode {_e(job.spec.mode)} · attempts {job.attempts} · "
        f"{job.committed_chars:,} characters</p>{error}"
        '<div class="actions">'
        f'<button type="button" data-action="cancel"{"" if can_cancel else " disabled"}>Cancel job</button>'
        f'<button type="button" data-action="retry"{"" if can_retry else " disabled"}>Retry job</button>'
        f'<a href="/ui/jobs/{quote(job.id, safe="")}/text" download>Download text</a></div>',
        "<details open><summary>Usage and cost</summary><table class=usage>"
        f"{usage}<tr><th scope=row>cost</th><td class=num>{format_usd(spend.total_usd)}</td></tr>"
        f"<tr><th scope=row>waste</th><td class=num>{format_usd(spend.waste_usd)}</td></tr></table></details>"
        f"<details open><summary>Timeline</summary>{_timeline(attempts, history)}</details>",
    )


def job_page(job: Job, panel: tuple[str, str], csrf: str) -> str:
    head, details = panel
    body = (
        f'<h1>Job <code>{_e(job.id)}</code></h1><div id="job" data-job="{_e(job.id)}">'
        f'<div id="panel" aria-live="polite">{head}</div>'
        '<div class="job-grid"><section aria-labelledby="doc-title"><h2 id="doc-title">Document</h2>'
        '<pre id="doc" tabindex="0" aria-label="Document text"></pre>'
        '<p class="live" id="live-status" aria-live="polite"></p></section>'
        f'<section id="details" aria-label="Usage and timeline">{details}</section></div></div>'
    )
    return layout(f"Job {job.id}", body, csrf=csrf, page="job")


def _bucket_rows(buckets: Mapping[str, BucketState], now: float) -> str:
    rows = []
    for key, b in buckets.items():
        why = f" ({_e(b.pause_reason)})" if b.pause_reason else ""
        pause = f"paused, {b.paused_until - now:.0f} s left{why}" if b.paused_until > now else "not paused"
        rows.append(
            f"<tr><td>{_e(key)}</td><td class=num>{b.requests:,.0f}</td>"
            f"<td class=num>{b.input_tokens:,.0f}</td>"
            f"<td class=num>{b.output_tokens:,.0f}</td><td>{_when(b.updated_at)}</td><td>{pause}</td></tr>"
        )
    return (
        "".join(rows)
        or '<tr><td colspan="6">No bucket yet (no limits configured, or no request made).</td></tr>'
    )


_ERRORS = ("retry", "failed", "lease_expired", "lease_lost", "released")


def chart_svg(view: FleetView, minutes: int = 60) -> str:
    """Jobs finished per minute (bars), output tokens/s (line) and errors by kind (stacked bars)."""
    start = (view.now // 60 - minutes + 1) * 60
    done = [0] * minutes
    tokens = [0.0] * minutes
    errors: dict[str, list[int]] = {kind: [0] * minutes for kind in _ERRORS}
    for m in view.minutes:
        slot = int((m.minute - start) // 60)
        if not 0 <= slot < minutes:
            continue
        tokens[slot] += m.output_tokens / 60
        if m.outcome == "succeeded":
            done[slot] += m.attempts
        elif m.outcome in errors:
            errors[m.outcome][slot] += m.attempts
    width, height, bar = 600, 120, 10
    top = max([*done, *(sum(e[i] for e in errors.values()) for i in range(minutes)), 1])
    top_tokens = max([*tokens, 1.0])
    shapes = []
    for i in range(minutes):
        x = i * bar
        h = done[i] / top * (height - 10)
        if h:
            shapes.append(
                f'<rect class="ok" x="{x}" y="{height - h:.1f}" width="{bar - 2}" height="{h:.1f}"/>'
            )
        y = float(height)
        for kind in _ERRORS:
            eh = errors[kind][i] / top * (height - 10)
            if eh:
                y -= eh
                shapes.append(
                    f'<rect class="err-{kind}" x="{x + 3}" y="{y:.1f}" width="{bar - 6}" height="{eh:.1f}"/>'
                )
    points = " ".join(
        f"{i * bar + bar / 2:.0f},{height - t / top_tokens * (height - 10):.1f}" for i, t in enumerate(tokens)
    )
    shapes.append(f'<polyline class="tokens" points="{points}"/>')
    summary = f"Last hour: {sum(done)} jobs finished, peak {max(tokens):,.1f} output tokens/s, " + ", ".join(
        f"{kind} {sum(v)}" for kind, v in errors.items()
    )
    return (
        f'<figure><svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(summary)}" class="chart">'
        f"{''.join(shapes)}</svg><figcaption>{_e(summary)}. Bars: jobs finished per minute (errors stacked "
        "by kind); line: output tokens per second.</figcaption></figure>"
    )


def _reason_text(reason: str) -> str:
    """A stored pause reason in words (``429 rate_limit_error`` → rate limited, 429 …)."""
    if not reason:
        return "a 429 or 529 from the API"
    status = reason.split(" ", 1)[0]
    meaning = {"429": "rate limited", "529": "the API is overloaded"}.get(status, "the API asked to back off")
    return f"{meaning}: {reason}"


def fleet_panel(view: FleetView, pauses: Mapping[str, float], reasons: Mapping[str, str]) -> str:
    workers = (
        "".join(
            f"<tr><td><code>{_e(w.worker)}</code></td><td>{_e(w.worker.split(':')[0])}</td>"
            f"<td>{_when(w.last_seen)} ({view.now - w.last_seen:.0f} s ago)</td>"
            f"<td class=num>{w.running}</td></tr>"
            for w in view.workers
        )
        or '<tr><td colspan="4">No worker seen in the last hour.</td></tr>'
    )
    paused = (
        "".join(
            f"<li>{_e(key)}: the fleet is paused for {until - view.now:.0f} s more "
            f"({_e(_reason_text(reasons.get(key, '')))})</li>"
            for key, until in pauses.items()
        )
        or "<li>No fleet pause.</li>"
    )
    return (
        "<h2>Workers</h2><div class=table-wrap><table><thead><tr><th scope=col>Id</th><th scope=col>Host</th>"
        "<th scope=col>Last heartbeat</th><th scope=col>Running jobs</th></tr></thead>"
        f"<tbody>{workers}</tbody></table></div>"
        f'<h2>Rate limits</h2><ul class="pauses">{paused}</ul>'
        "<div class=table-wrap><table><thead><tr><th scope=col>Bucket</th><th scope=col>Requests left</th>"
        "<th scope=col>Input tokens left</th><th scope=col>Output tokens left</th><th scope=col>At</th>"
        "<th scope=col>Pause</th></tr></thead>"
        f"<tbody>{_bucket_rows(view.buckets, view.now)}</tbody></table></div>"
        f"<h2>Throughput</h2>{chart_svg(view)}"
    )
