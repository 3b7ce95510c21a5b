"""The review digest: one SHA-256 over exactly what a reviewer is shown and what will run.

An approval binds to what the reviewer saw, not to a request id: the checkpoint's artifact (its
content-addressed URI), the proposed parameters, their schema, the approval policy in force, the monitor
alerts on the request and the side effects a rejection would undo. Each field is hashed on its own
(canonical JSON, ``saferun.domain.canonical``) and the digest is the hash of those hashes, so when a
decision arrives with an older digest the server can name which fields changed since, without keeping a
copy of every version a reviewer may have seen.

Pure: no I/O, no clock. ``saferun.core.review`` gathers the fields from the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from saferun.domain.canonical import canonical_bytes

VERSION = 1
# the order the fields are listed in (stale answers name them in this order)
FIELDS = ("artifact_uri", "parameters", "parameter_schema", "policy", "alerts", "pending_undo", "quorum")
# hashed only when set: a request without a quorum has the digest it always had
OPTIONAL_FIELDS = ("quorum",)
PREFIX = "sha256:"
DIGEST_LENGTH = len(PREFIX) + 64


@dataclass(frozen=True)
class Review:
    """The reviewed fields, each hashed, and the digest over them."""

    fields: Mapping[str, Any]
    field_hashes: Mapping[str, str]
    digest: str


def _sha(value: Any, field: str) -> str:
    return hashlib.sha256(canonical_bytes(value, field)).hexdigest()


def policy_ref(name: str | None, version: int | None) -> dict[str, Any] | None:
    """The policy part: its name and version when a policy is active, else None."""
    if name is None:
        return None
    return {"name": name, "version": version}


def undo_item(step: Mapping[str, Any]) -> dict[str, Any]:
    """What a rejection would compensate for one saga step: its name, compensation and arguments."""
    return {
        "step_id": step["step_id"],
        "name": step["name"],
        "compensation": step["compensation"],
        "args": step["args"],
    }


def review(
    *,
    artifact_uri: str | None,
    parameters: Mapping[str, Any] | None,
    parameter_schema: Mapping[str, Any] | None,
    policy: Mapping[str, Any] | None,
    alerts: Iterable[Mapping[str, Any]] | None,
    pending_undo: Iterable[Mapping[str, Any]] | None,
    quorum: Mapping[str, Any] | None = None,
) -> Review:
    """The digest of one version of a request. Equal content gives an equal digest whatever the key order;
    a list's order matters (alerts and undo steps are shown, and undone, in order)."""
    fields: dict[str, Any] = {
        "artifact_uri": artifact_uri,
        "parameters": dict(parameters or {}),
        "parameter_schema": dict(parameter_schema) if parameter_schema is not None else None,
        "policy": dict(policy) if policy is not None else None,
        "alerts": [dict(a) for a in alerts or ()],
        "pending_undo": [dict(s) for s in pending_undo or ()],
        # the M-of-N rule the votes count toward (saferun/domain/quorum.py): a vote on another rule is stale
        "quorum": dict(quorum) if quorum is not None else None,
    }
    hashes = {
        name: _sha(fields[name], name)
        for name in FIELDS
        if name not in OPTIONAL_FIELDS or fields[name] is not None
    }
    top = _sha({"v": VERSION, "fields": hashes}, "review")
    return Review(fields, hashes, PREFIX + top)


def parameters_digest(parameters: Mapping[str, Any]) -> str:
    """The hash of one parameter set, as the ``parameters`` field of a review hashes it."""
    return PREFIX + _sha(dict(parameters), "parameters")


def changed_fields(seen: Review, now: Review) -> list[str]:
    """The fields whose content differs between two versions, in ``FIELDS`` order."""
    return [name for name in FIELDS if seen.field_hashes.get(name) != now.field_hashes.get(name)]


def well_formed(digest: str) -> bool:
    """``sha256:`` and 64 lowercase hex digits: anything else is bad input, not a stale review."""
    hexpart = digest[len(PREFIX) :]
    return (
        digest.startswith(PREFIX)
        and len(digest) == DIGEST_LENGTH
        and all(c in "0123456789abcdef" for c in hexpart)
    )
