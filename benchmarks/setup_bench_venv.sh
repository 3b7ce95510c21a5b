#!/usr/bin/env bash
# Create <repo>/.bench-venv: SafeRun (editable) plus LangGraph and its SQLite checkpointer, for
# benchmarks/bench_checkpoints.py. The peer's checkpointer (langgraph-checkpoint-sqlite) is a
# benchmark-only dependency, kept apart from .venv (where LangGraph itself is only the optional
# `saferun[langgraph]` integration). Idempotent: re-running reuses the venv and only installs
# what is missing (set BENCH_VENV_UPGRADE=1 to upgrade LangGraph to the newest release).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$REPO/.bench-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

upgrade=()
if [ "${BENCH_VENV_UPGRADE:-0}" = "1" ]; then
    upgrade=(--upgrade)
fi

# Skip the network round-trips when everything is already importable (fast, offline re-runs).
if [ "${#upgrade[@]}" -eq 0 ] && "$VENV/bin/python" - "$REPO" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, pathlib, sys
import langgraph.checkpoint.sqlite, ormsgpack, saferun  # noqa: F401
repo = pathlib.Path(sys.argv[1]).resolve()
# saferun must be the editable install of *this* checkout
assert pathlib.Path(saferun.__file__).resolve().is_relative_to(repo), saferun.__file__
md.version("langgraph")
PYEOF
then
    echo "$VENV is up to date"
else
    "$VENV/bin/python" -m pip install --quiet "${upgrade[@]}" langgraph langgraph-checkpoint-sqlite ormsgpack
    "$VENV/bin/python" -m pip install --quiet -e "$REPO"
fi

"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
import platform
print("python", platform.python_version(), "|",
      " | ".join(f"{p} {md.version(p)}" for p in
                 ("saferun", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "ormsgpack")))
PYEOF
