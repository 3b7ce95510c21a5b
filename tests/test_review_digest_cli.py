"""The CLI decides on what it showed (issue 16, item 1): ``approvals show`` prints the review digest,
``approve/modify/reject --digest`` sends it, and a request changed since is not decided."""

from __future__ import annotations

import json
import re

from saferun.storage.database import Database
from tests.cli_support import cli, pending_workflow


def test_show_then_decide_with_the_digest_and_a_stale_one_decides_nothing(database_env: Database) -> None:
    p = pending_workflow(database_env, step="cli_test_cancel_order")
    shown = cli("approvals", "show", p.request_id)
    assert shown.exit_code == 0, shown.output
    (digest,) = set(re.findall(r"sha256:[0-9a-f]{64}", shown.output))
    assert digest == p.orch.get_approval_request(p.request_id).review_digest
    as_json = json.loads(cli("approvals", "show", p.request_id, "--json").output)
    assert as_json["review_digest"] == digest

    p.orch.add_alerts(p.request_id, [{"level": "high", "message": "price tripled"}], actor="monitor")
    stale = cli("approvals", "approve", p.request_id, "--by", "alice", "--digest", digest)
    assert stale.exit_code == 1 and "alerts" in stale.output and "nothing was decided" in stale.output
    assert "Traceback" not in stale.output
    assert p.orch.get_approval_request(p.request_id).status == "pending"

    again = cli("approvals", "show", p.request_id)
    assert "price tripled" in again.output
    (fresh,) = set(re.findall(r"sha256:[0-9a-f]{64}", again.output))
    done = cli(
        "approvals", "modify", p.request_id, "--by", "alice", "--set", "pizza_count=10", "--digest", fresh
    )
    assert done.exit_code == 0, done.output
    decided = p.orch.get_approval_response(p.request_id)
    assert decided is not None and decided.review_digest == fresh


def test_a_bad_or_misplaced_digest_is_refused_before_anything_is_decided(database_env: Database) -> None:
    p = pending_workflow(database_env)
    bad = cli("approvals", "approve", p.request_id, "--by", "alice", "--digest", "sha256:zz")
    assert bad.exit_code == 2 and "--digest" in bad.output
    two = cli(
        "approvals",
        "reject",
        p.request_id,
        "req_other",
        "--by",
        "alice",
        "--rationale",
        "no",
        "--digest",
        "sha256:" + "0" * 64,
    )
    assert two.exit_code == 2 and "one request" in two.output
    assert p.orch.get_approval_request(p.request_id).status == "pending"
