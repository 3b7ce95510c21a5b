"""Identifiers in the seed's style: a short prefix and 64 random bits (``wf_3f9c0a…``, ``req_…``)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
