"""Start-up cost (issue 12, target 5): ``import saferun`` and ``saferun serve`` to its first 200.

Each line is measured in fresh interpreters, alternating, and printed beside its limit and beside the
floor it cannot go under (the interpreter alone; the libraries SafeRun is built on, imported alone):

- ``import saferun``: timed inside the child around the import statement, so interpreter start-up is
  not counted (it is its own line). Limit 0.4 s.
- ``import saferun.api.server``: what a server process imports before it can start (FastAPI, the routes,
  the dashboard); no limit of its own, it is part of the next line.
- ``saferun serve`` to first 200: from spawning the CLI to the first ``200`` of ``GET /api/health``, on
  an existing SQLite file (created, migrated and given its demo data by a first, untimed start). Limit 2 s.

Bytecode is cached as on any installed package: the children write it to a private
``PYTHONPYCACHEPREFIX`` (not the source tree) and a warm-up run fills it, even where the environment sets
``PYTHONDONTWRITEBYTECODE`` (this CI machine does; without a cache, compiling SafeRun's ~95 modules adds
~0.1 s to every start).

    .venv/bin/python benchmarks/bench_startup.py [--runs 15] [--serve-runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

IMPORT_LIMIT_S = 0.4
SERVE_LIMIT_S = 2.0

TIMED_IMPORT = """
import time
t = time.perf_counter()
{body}
print(time.perf_counter() - t)
"""

IMPORTS = {
    "interpreter alone (python -c pass)": None,
    "floor: import sqlalchemy, pydantic": "import sqlalchemy, pydantic",
    "import saferun": "import saferun",
    "import saferun.api.server": "import saferun.api.server",
}


def child_env(cache: Path, home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    if home is not None:
        env["SAFERUN_HOME"] = str(home)
        env.pop("DATABASE_URL", None)
    return env


def time_import(body: str | None, env: dict[str, str]) -> float:
    """Seconds: the import inside the child, or (body None) the whole child's life."""
    if body is None:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        return time.perf_counter() - start
    out = subprocess.run(
        [sys.executable, "-c", TIMED_IMPORT.format(body=body)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_serve(env: dict[str, str]) -> float:
    """Seconds from spawning ``saferun serve`` to the first 200 of /api/health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/health"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "saferun.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"saferun serve exited with {proc.returncode}")
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
                if time.perf_counter() - start > 60:
                    raise RuntimeError("saferun serve did not answer within 60 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def row(name: str, samples: list[float], limit: float | None) -> str:
    med = statistics.median(samples)
    verdict = "" if limit is None else ("met" if med <= limit else "MISSED")
    limit_text = "" if limit is None else f"{limit:.2f}"
    return (
        f"| {name} | {med * 1000:.0f} | {min(samples) * 1000:.0f}-{max(samples) * 1000:.0f} "
        f"| {limit_text} | {verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per import line")
    parser.add_argument("--serve-runs", type=int, default=5, help="server starts (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="saferun-bench-startup-") as tmp:
        cache, home = Path(tmp) / "pycache", Path(tmp) / "home"
        env = child_env(cache)
        for body in IMPORTS.values():  # warm-up: fills the bytecode cache
            time_import(body, env)
        samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
        for _ in range(args.runs):  # alternating, so a slow moment hits every line alike
            for name, body in IMPORTS.items():
                samples[name].append(time_import(body, env))

        serve: list[float] = []
        if args.serve_runs:
            serve_env = child_env(cache, home)
            time_serve(serve_env)  # creates, migrates and seeds the file: not timed
            serve = [time_serve(serve_env) for _ in range(args.serve_runs)]

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, bytecode cached; times in ms")
    print()
    print("| what | median ms | min-max ms | limit s | |")
    print("|---|---|---|---|---|")
    for name in IMPORTS:
        print(row(name, samples[name], IMPORT_LIMIT_S if name == "import saferun" else None))
    if serve:
        print(row("saferun serve → first 200 (existing SQLite file)", serve, SERVE_LIMIT_S))


if __name__ == "__main__":
    main()
