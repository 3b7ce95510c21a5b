"""``domain.chain_facts``, pure: which snapshot the chain last saw pass, found from the newest binding back.

A snapshot status binding carries only a hash, so each candidate costs digests. A cold read folds a
workflow's whole chain: it must not pay a digest per status binding it ever held (three per checkpoint
before), only for the bindings after the last pass.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saferun.domain import chain_facts
from saferun.domain.audit import GENESIS, bind, event_hash, payload_text
from saferun.domain.chain_facts import ChainFacts, extend, of_events

WF = "wf_facts"


def chain(statuses: list[tuple[str, str]], first_seq: int = 1, prev: str = GENESIS) -> list[dict[str, Any]]:
    """Events that each bind one snapshot's status (``(snapshot id, status)``), linked from ``prev``."""
    out = []
    for i, (snap, status) in enumerate(statuses):
        seq = first_seq + i
        payload = payload_text(
            {"bind": [bind("snapshots", "status", {"snapshot_id": snap, "status": status})]}
        )
        at = f"2026-12-07T00:00:{i % 60:02d}.000000+00:00"
        digest = event_hash(
            workflow_id=WF, seq=seq, kind="checkpoint", actor="a", at=at, payload=payload, prev_hash=prev
        )
        out.append(
            {
                "workflow_id": WF,
                "seq": seq,
                "kind": "checkpoint",
                "actor": "a",
                "at": at,
                "payload": payload,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    return out


def facts(events: list[dict[str, Any]]) -> ChainFacts:
    got = of_events(WF, events)
    assert isinstance(got, ChainFacts), got
    return got


def test_the_last_pass_wins_over_later_statuses_that_do_not_pass() -> None:
    events = chain([("a", "captured"), ("a", "approved"), ("b", "captured"), ("b", "rejected")])
    assert facts(events).last_passed == "a"
    assert facts(events + chain([("c", "passed")], 5, events[-1]["hash"])).last_passed == "c"
    assert facts(chain([("a", "captured"), ("b", "superseded")])).last_passed is None


@pytest.mark.parametrize("split", [1, 2, 3])
def test_folding_in_pieces_keeps_a_pass_seen_before(split: int) -> None:
    events = chain([("a", "captured"), ("a", "modified"), ("b", "captured"), ("b", "rejected")])
    head = facts(events[:split])
    more = extend(head, events[split:])
    assert isinstance(more, ChainFacts) and more.last_passed == facts(events).last_passed == "a"


def test_a_long_chain_costs_digests_only_after_its_last_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    statuses = [(f"s{i}", status) for i in range(200) for status in ("captured", "passed")]
    events = chain([*statuses, ("last", "captured")])
    calls = 0
    real = chain_facts.row_digest

    def counted(*args: Any) -> str:
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(chain_facts, "row_digest", counted)
    assert facts(events).last_passed == "s199"
    # the trailing "captured" binding (three statuses tried) and the pass before it (found at the third)
    assert calls <= 6, calls


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    seq=st.integers(min_value=0, max_value=2**70),
)
def test_a_stored_events_hash_is_the_checked_one(text: str, seq: int) -> None:
    """Verification skips the write-time value check (``event_hash(stored=True)``): the digest must be the
    one the checked encoding gives, for any text (surrogates and NULs included) and any sequence number."""
    fields = {"workflow_id": WF, "seq": seq, "kind": text, "actor": "a", "at": text, "payload": "{}"}
    try:
        checked = event_hash(**fields, prev_hash=GENESIS)
    except Exception as exc:  # a value the write path refuses: the read path must not invent a digest
        with pytest.raises(type(exc)):
            event_hash(**fields, prev_hash=GENESIS, stored=True)
        return
    assert event_hash(**fields, prev_hash=GENESIS, stored=True) == checked
