"""The pure review digest (issue 16, item 1): canonical, field-sensitive, and able to name what changed."""

from __future__ import annotations

from typing import Any

import pytest

from saferun.domain import review_digest as rd
from saferun.errors import StateNotSerializable

BASE: dict[str, Any] = {
    "artifact_uri": "cas://sha256/abc",
    "parameters": {"amount": 100, "target": "acct_1"},
    "parameter_schema": {"type": "object", "properties": {"amount": {"type": "integer"}}},
    "policy": {"name": "payments", "version": 3},
    "alerts": [{"rule": "large_amount", "severity": "high"}],
    "pending_undo": [{"step_id": "s1", "name": "reserve", "compensation": "release", "args": {"id": 1}}],
}


def test_equal_content_gives_an_equal_digest_whatever_the_key_order() -> None:
    shuffled = {
        **BASE,
        "parameters": {"target": "acct_1", "amount": 100},
        "parameter_schema": {"properties": {"amount": {"type": "integer"}}, "type": "object"},
    }
    one, two = rd.review(**BASE), rd.review(**shuffled)
    assert one.digest == two.digest
    assert rd.well_formed(one.digest) and one.digest.startswith("sha256:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("artifact_uri", "cas://sha256/def"),
        ("parameters", {"amount": 101, "target": "acct_1"}),
        ("parameter_schema", None),
        ("policy", {"name": "payments", "version": 4}),
        ("policy", None),
        ("alerts", [*BASE["alerts"], {"rule": "new_payee"}]),
        ("alerts", list(reversed([*BASE["alerts"], {"rule": "new_payee"}]))),
        ("pending_undo", []),
    ],
)
def test_each_field_changes_the_digest_and_is_named(field: str, value: Any) -> None:
    before, after = rd.review(**BASE), rd.review(**{**BASE, field: value})
    assert before.digest != after.digest
    assert rd.changed_fields(before, after) == [field]


def test_several_changes_are_named_in_field_order() -> None:
    before = rd.review(**BASE)
    after = rd.review(**{**BASE, "alerts": [], "artifact_uri": "cas://x", "parameters": {}})
    assert rd.changed_fields(before, after) == ["artifact_uri", "parameters", "alerts"]


def test_empty_and_missing_parts_are_the_same_review() -> None:
    empty = rd.review(
        artifact_uri="u", parameters=None, parameter_schema=None, policy=None, alerts=None, pending_undo=None
    )
    explicit = rd.review(
        artifact_uri="u", parameters={}, parameter_schema=None, policy=None, alerts=[], pending_undo=[]
    )
    assert empty.digest == explicit.digest


def test_the_digest_is_over_field_hashes_with_a_version() -> None:
    """Recomputable by anyone holding the fields (docs/review-digest.md gives the recipe)."""
    import hashlib

    from saferun.domain.canonical import canonical_bytes

    r = rd.review(**BASE)
    hashes = {k: hashlib.sha256(canonical_bytes(BASE[k])).hexdigest() for k in rd.FIELDS if k in BASE}
    top = hashlib.sha256(canonical_bytes({"v": 1, "fields": hashes})).hexdigest()
    assert r.digest == "sha256:" + top and dict(r.field_hashes) == hashes
    # a quorum rule (issue 16 item 2) is one more field, hashed only when the request has one
    rule = {"approvals": 2, "of": "risk", "rejections": 1, "distinct_teams": False}
    q = rd.review(**BASE, quorum=rule)
    with_rule = {**hashes, "quorum": hashlib.sha256(canonical_bytes(rule)).hexdigest()}
    assert q.digest == "sha256:" + hashlib.sha256(canonical_bytes({"v": 1, "fields": with_rule})).hexdigest()
    assert rd.changed_fields(r, q) == ["quorum"]
    assert rd.changed_fields(q, rd.review(**BASE, quorum={**rule, "approvals": 3})) == ["quorum"]


def test_non_json_content_is_refused_naming_the_field() -> None:
    with pytest.raises(StateNotSerializable) as info:
        rd.review(**{**BASE, "parameters": {"when": {1, 2}}})
    assert "parameters" in str(info.value.fields or info.value.message)


@pytest.mark.parametrize(
    "text",
    ["", "sha256:", "sha256:" + "A" * 64, "md5:" + "a" * 64, "sha256:" + "a" * 63, "sha256:" + "g" * 64],
)
def test_malformed_digests_are_not_well_formed(text: str) -> None:
    assert not rd.well_formed(text)


def test_parameters_digest_matches_the_reviews_parameters_field() -> None:
    r = rd.review(**BASE)
    assert rd.parameters_digest(BASE["parameters"]) == "sha256:" + r.field_hashes["parameters"]
