"""The README runs as written (issue 13, item 7): every ```bash and ```python block, in order, in one shell.

Why: the README is the newcomer's first hour, and it drifted (commands that failed as written, examples no
identity could run). Here its blocks run the way a reader runs them: bash blocks one after another in one
shell session (a variable set in one block is there in the next, ``source .venv/bin/activate`` included),
python blocks as ``python file.py`` in that session's environment, against real servers on a fresh
SAFERUN_HOME. The README says what this test does with a block by a marker on the line before it:

- no marker: run it; it must exit 0;
- ``<!-- docs-test: server -->``: the block starts a server (``scripts/serve``, ``saferun serve ...``); the
  test starts the same command itself on a free port (long-running processes cannot be a step) and points
  the README's ``127.0.0.1:<port>`` / ``localhost:<port>`` at it in every later block;
- ``<!-- docs-test: background until: <shell condition> -->``: start it, then wait until the condition
  holds before the next block (an agent waiting for its reviewer); it must exit 0 by the end;
- ``<!-- docs-test: skip — <reason> -->``: not run here, and the reason says why (a missing reason fails).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>skip|server|background)\b(?P<rest>.*?)-->\s*$")
BLOCK_TIMEOUT = 180.0  # a hung block fails the test instead of hanging CI; no block is timed


@dataclass
class Block:
    line: int
    lang: str
    text: str
    kind: str = "run"
    arg: str = ""

    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang}, {self.kind})"


def blocks(text: str) -> list[Block]:
    """Every fenced block with its marker (the last non-blank line before the fence)."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        block = Block(start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k].strip()) if k >= 0 else None
        if marker:
            block.kind = marker["kind"]
            block.arg = marker["rest"].strip().lstrip("—-:").strip()
            if block.kind == "background":
                block.arg = block.arg.removeprefix("until:").strip()
        out.append(block)
        i = j + 1
    return out


def test_every_block_is_run_or_says_why_not() -> None:
    found = [b for b in blocks(README.read_text()) if b.lang in ("bash", "sh", "python", "")]
    assert all(b.lang for b in found), [b.where() for b in found if not b.lang]  # untyped fences hide drift
    for b in found:
        if b.kind == "skip":
            assert len(b.arg) >= 10, f"{b.where()}: a skip needs its reason"
        if b.kind == "background":
            assert b.arg, f"{b.where()}: background needs 'until: <condition>'"
        if b.kind == "server":
            assert re.search(r"scripts/serve|saferun serve", b.text), b.where()
    assert sum(b.kind != "skip" for b in found) >= 10  # most of the README runs


class Session:
    """One reader's shell: exported state carried from block to block, servers on free ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.state = home / "shell-state.sh"
        self.state.write_text("")
        self.ports: dict[str, int] = {}
        self.servers: list[subprocess.Popen[bytes]] = []
        self.background: list[tuple[Block, subprocess.Popen[str]]] = []
        self.outputs: list[str] = []  # what each background block printed, in README order
        self.env = {
            "HOME": str(home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",  # no .venv: the README has to say how to get it
            "SAFERUN_HOME": str(home / "saferun"),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
        }

    def rewrite(self, text: str) -> str:
        for readme_port, port in self.ports.items():
            text = re.sub(rf"(127\.0\.0\.1|localhost):{readme_port}\b", rf"\1:{port}", text)
        return text

    def start_server(self, block: Block) -> None:
        line = next(ln for ln in block.text.splitlines() if re.search(r"scripts/serve|saferun serve", ln))
        args = shlex.split(line.split("#", 1)[0])
        readme_port = args[args.index("--port") + 1] if "--port" in args else "8000"
        auth = args[args.index("--auth") + 1] if "--auth" in args else "auto"
        port = free_port()
        cmd = [str(ROOT / ".venv/bin/saferun"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = open(self.home / f"server-{readme_port}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.servers.append(
            subprocess.Popen([*cmd, "--auth", auth], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (self.home / f"server-{readme_port}.log").read_text()
            time.sleep(0.2)
        self.ports[readme_port] = port

    def command(self, block: Block, *, save: bool = True, venv: bool = False) -> list[str]:
        """bash that restores the session, runs the block, saves the session (exported variables).

        A background block does not save (it ends while later blocks run, and would undo their state);
        the test's own ``until`` checks get .venv on PATH (``venv``), which is the harness, not the README.
        """
        body = self.rewrite(block.text)
        if block.lang == "python":
            script = self.home / "blocks" / f"block_{block.line}.py"  # not beside SAFERUN_HOME's dir
            script.parent.mkdir(exist_ok=True)
            script.write_text(body)
            body = f"python {shlex.quote(str(script))}\n"
        skip = "(BASH|SHELLOPTS|BASHOPTS|PWD|OLDPWD|SHLVL|_)"
        save = f"export -p | grep -v -E '^declare -[a-z]*x[a-z]* {skip}=' > {shlex.quote(str(self.state))}"
        path = f"PATH={shlex.quote(str(ROOT / '.venv/bin'))}:$PATH\n" if venv else ""
        tail = f"set +e\n{save}\n" if save else ""
        program = f"set -a\nsource {shlex.quote(str(self.state))}\n{path}set -eo pipefail\n{body}\n{tail}"
        return ["bash", "-c", program]

    def run(self, block: Block) -> None:
        proc = subprocess.run(
            self.command(block), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        assert proc.returncode == 0, f"{block.where()} failed:\n{block.text}\n{proc.stdout}\n{proc.stderr}"

    def start_background(self, block: Block) -> None:
        proc = subprocess.Popen(
            self.command(block, save=False),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.background.append((block, proc))
        condition = Block(block.line, "bash", block.arg + "\n")
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            check = self.command(condition, save=False, venv=True)
            if subprocess.run(check, cwd=ROOT, env=self.env, capture_output=True).returncode == 0:
                return
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"{block.where()} ended before '{block.arg}':\n{out}")
            assert time.monotonic() < deadline, f"{block.where()}: '{block.arg}' never held"
            time.sleep(0.2)

    def finish(self) -> None:
        for block, proc in self.background:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
            assert proc.returncode == 0, f"{block.where()} failed:\n{out}"
            self.outputs.append(out)

    def close(self) -> None:
        for proc in [p for _, p in self.background] + self.servers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    if not (ROOT / ".venv/bin/saferun").exists():
        pytest.skip("no .venv: run scripts/bootstrap first")
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:  # the README's curl examples use them; CI installs both (.ci/run)
        if IN_CI:
            pytest.fail(f"CI must run the README, but {', '.join(missing)} is not installed")
        pytest.skip(f"the README's curl examples need {' and '.join(missing)} (apt-get install curl jq)")
    session = Session(tmp_path)
    try:
        for block in blocks(README.read_text()):
            if block.lang not in ("bash", "sh", "python") or block.kind == "skip":
                continue
            if block.kind == "server":
                session.start_server(block)
            elif block.kind == "background":
                session.start_background(block)
            else:
                session.run(block)
        session.finish()
        # the agents got the decisions the README says they get
        first, _supervised, remote = session.outputs
        assert "MODIFIED by human_789: ordered 10 pizzas ($120)" in first
        assert "MODIFIED by rita {'pages': 8}" in remote
    finally:
        session.close()
