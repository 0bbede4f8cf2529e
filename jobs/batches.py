"""Rules of Message Batches that the store applies: a job's ``custom_id`` inside a batch.

The API accepts ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and rejects a whole batch for one
bad id (../shared/SERVICE.md §1.2). Job ids are free text, so an id that does not fit is mapped to
a stable alias (a hash of the id), stored on the job beside the batch it is in: results are matched
back through the stored mapping, never by reversing the alias.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ("CUSTOM_ID", "custom_id_for")

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Aliases start with this prefix; a job id that itself starts with it is aliased too, so an id
#: can never equal another job's alias.
_ALIAS_PREFIX = "job_"


def custom_id_for(job_id: str) -> str:
    """The job id itself when the API accepts it, else ``job_`` and 58 hex digits (232 bits) of
    its SHA-256: stable across rounds and processes, and unique in practice."""
    if CUSTOM_ID.fullmatch(job_id) and not job_id.startswith(_ALIAS_PREFIX):
        return job_id
    return _ALIAS_PREFIX + hashlib.sha256(job_id.encode()).hexdigest()[:58]
