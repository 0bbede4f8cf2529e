"""Repairing a failed job's spec before it is retried: ``retry ID --set model=claude-sonnet-4-6``.

A job that failed because of its spec (a typo in the model, ``max_tokens`` too small, a cost cap
too tight) would fail the same way on every retry, and re-enqueueing its line cannot help: the id
already exists. So ``retry`` may change the fields that say *how* the job runs. The fields that say
*what* it answers (``prompt``, ``messages``, ``system``) stay: the text kept so far answers the old
prompt, and a new prompt is a new job. The revised spec goes through the same validation as a
JSONL line (:func:`jobs.jsonl.check_job`), so a bad value is refused with the field's name and the
same message ``enqueue`` would give. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobs.blocks import content_json
from jobs.jsonl import JobDefaults, Problem, check_job
from jobs.models import REVISABLE_FIELDS, JobSpec
from jobs.options import options_dict

__all__ = ("REVISABLE", "parse_changes", "revise", "spec_object")

#: The fields ``retry --set`` may change.
REVISABLE = (*REVISABLE_FIELDS, "timeout_seconds")
_FIXED = ("id", "prompt", "messages", "system")


def spec_object(spec: JobSpec) -> dict[str, Any]:
    """The spec as the job object :func:`check_job` reads back into the same spec."""
    data: dict[str, Any] = {
        "id": spec.id,
        "messages": [{"role": m.role, "content": content_json(m.content)} for m in spec.messages],
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "output_budget": spec.output_budget,
        "max_attempts": spec.max_attempts,
        "priority": spec.priority,
        "metadata": dict(spec.metadata),
        "prompt_cache": spec.prompt_cache,
    }
    if spec.system is not None:
        data["system"] = spec.system
    if spec.max_cost_usd is not None:
        data["max_cost_usd"] = spec.max_cost_usd
    data.update(options_dict(spec))
    return data


def parse_changes(items: list[str]) -> tuple[dict[str, Any], list[Problem]]:
    """``FIELD=VALUE`` items into values: JSON where the text is JSON (``4000``, ``null``,
    ``{"team": "docs"}``), the text itself otherwise (``claude-sonnet-4-6``)."""
    changes: dict[str, Any] = {}
    problems: list[Problem] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append((item or "--set", "expected FIELD=VALUE, e.g. model=claude-sonnet-4-6"))
            continue
        try:
            changes[name] = json.loads(text)
        except ValueError:
            changes[name] = text
    return changes, problems


def revise(spec: JobSpec, changes: Mapping[str, Any], defaults: JobDefaults) -> JobSpec | list[Problem]:
    """``spec`` with ``changes`` applied and validated, or every problem as (field, problem).

    A value of ``null`` means "the default": ``defaults``, the config's, as at enqueue.
    """
    problems: list[Problem] = []
    for name in changes:
        if name in _FIXED:
            problems.append(
                (
                    name,
                    "cannot be changed by retry: the text kept so far answers the old prompt "
                    "(enqueue a new job instead)",
                )
            )
        elif name not in REVISABLE:
            problems.append((name, f"unknown or unchangeable field (changeable: {', '.join(REVISABLE)})"))
    if problems:
        return problems
    data = spec_object(spec)
    if "timeout_seconds" in changes:
        data.pop("deadline", None)  # a new timeout replaces the old deadline
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return check_job(data, defaults)
