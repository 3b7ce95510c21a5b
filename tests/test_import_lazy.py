"""``import saferun`` stays light (issue 12, target 5): optional stacks load on first use.

The x402 EVM stack (eth_account, web3, py_ecc) and the LLM/agent SDKs cost most of a second at import; a
server that never funds an escrow through x402 or calls a model must not pay for them. Checked in a fresh
interpreter through ``sys.modules`` (no timing in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("web3", "eth_account", "py_ecc", "eth_utils", "eth_abi", "x402", "anthropic", "openai", "langgraph")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    return [m for m in HEAVY if m in modules]


def test_import_saferun_and_server_skips_optional_stacks() -> None:
    assert loaded_after("import saferun, saferun.api.server\nsaferun.api.server.create_app") == []


def test_import_saferun_skips_what_only_some_processes_need() -> None:
    """PostgreSQL's dialect (SQLite processes never use it) and PyYAML (only a policy or monitor file
    needs it): ~27 ms of ``import saferun`` between them (benchmarks/bench_startup.py)."""
    probe = "import saferun\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    assert not {"sqlalchemy.dialects.postgresql", "yaml"} & modules


def test_payments_names_still_resolve_on_first_use() -> None:
    # the lazy names are the real ones, and touching them is what loads the EVM stack
    code = "from saferun.payments import mint, balance_of, LedgerEvmSigner\nassert callable(mint)"
    loaded = loaded_after(code)
    assert "eth_account" in loaded or "x402" in loaded
