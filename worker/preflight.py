"""The check ``run`` makes before it claims anything: is the key good, is the base URL right, do
the queued jobs' models exist? One cheap request per model (``GET /v1/models/{id}``), no tokens.

A failure here stops ``run`` before any job is touched, with a one-line message naming the setting
to fix: the key's source (``ANTHROPIC_API_KEY``), ``[anthropic] base_url`` (or
``ANTHROPIC_BASE_URL``), or the model of the jobs that name it.
"""

from __future__ import annotations

from collections.abc import Mapping

import anthropic
import anyio
import structlog

from worker.errors import AccountError

__all__ = ("EXIT_ACCOUNT", "preflight")

log = structlog.get_logger("worker.preflight")

#: ``run`` exit code when the API account or endpoint cannot be used: the key was refused (401),
#: billing (402) or permission (403), the base URL does not answer or is not the Messages API, or a
#: queued job's model does not exist. Every job is left as it was.
EXIT_ACCOUNT = AccountError.exit_code

#: Each check request may take this long.
_CHECK_SECONDS = 15.0


async def preflight(
    client: anthropic.AsyncAnthropic, models: Mapping[str, int], *, key_source: str, url_source: str
) -> None:
    """Raise :class:`AccountError` with the setting to fix, or return when the API answers.

    ``models`` maps each model of the queued or running jobs to its job count."""
    names: list[str | None] = [*sorted(models)] or [None]
    for model in names:
        try:
            with anyio.fail_after(_CHECK_SECONDS):
                if model is None:
                    await client.models.list(limit=1)
                else:
                    await client.models.retrieve(model)
        except anthropic.AuthenticationError as exc:
            raise AccountError(
                f"the API refused the key from {key_source} (HTTP 401): {_message(exc)}"
            ) from exc
        except anthropic.PermissionDeniedError as exc:
            raise AccountError(
                f"the key from {key_source} lacks permission (HTTP 403): {_message(exc)}"
            ) from exc
        except anthropic.NotFoundError as exc:
            if model is None or not _names_model(exc, model):
                raise AccountError(
                    f"{url_source} ({client.base_url}) does not serve the Messages API (HTTP 404): "
                    "it should be the API's root, without /v1"
                ) from exc
            raise AccountError(
                f"model {model!r} (used by {models[model]} queued jobs) does not exist: fix [anthropic] "
                "model, or cancel those jobs"
            ) from exc
        except anthropic.APIStatusError as exc:
            if exc.status_code == 402:
                raise AccountError(
                    f"billing problem for the key from {key_source} (HTTP 402): {_message(exc)}"
                ) from exc
            if exc.status_code >= 500 or exc.status_code == 429:
                log.warning("preflight_inconclusive", status=exc.status_code)
                return  # the service is up but busy: the pool's pauses handle that
            raise AccountError(
                f"{url_source} ({client.base_url}) answered HTTP {exc.status_code}: {_message(exc)}"
            ) from exc
        except (anthropic.APIConnectionError, TimeoutError) as exc:
            raise AccountError(
                f"cannot connect to {url_source} ({client.base_url}): {type(exc).__name__}"
            ) from exc
    log.info("preflight_passed", models=len(models))


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def _names_model(exc: anthropic.APIStatusError, model: str) -> bool:
    return model in _message(exc)
