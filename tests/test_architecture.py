"""The layout keeps its promises: pure domain code does no I/O, the public names are importable."""

from __future__ import annotations

import ast
from pathlib import Path

import saferun

IO_LIBRARIES = {
    "sqlalchemy",
    "httpx",
    "fastapi",
    "starlette",
    "psycopg",
    "sqlite3",
    "zstandard",
    "alembic",
    "socket",
    "requests",
    "uvicorn",
    "typer",
    "rich",
}
DOMAIN = Path(saferun.__file__).parent / "domain"


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_modules_import_no_io_library() -> None:
    modules = sorted(DOMAIN.glob("*.py"))
    assert len(modules) >= 8
    for module in modules:
        assert not imported_roots(module) & IO_LIBRARIES, module.name


def test_public_names_are_all_importable() -> None:
    for name in saferun.__all__:
        assert getattr(saferun, name) is not None, name


def test_the_seed_module_paths_exist() -> None:
    import importlib

    for path in (
        "saferun.core.state_machine.models",
        "saferun.core.state_machine.orchestrator",
        "saferun.core.checkpoints.capture",
        "saferun.core.rollback.reconciliation",
        "saferun.agents.executor.agent",
        "saferun.agents.monitor.agent",
        "saferun.agents.supervisor.agent",
        "saferun.agents.reconciliation.agent",
        "saferun.api.x402.client",
        "saferun.config",
    ):
        importlib.import_module(path)
    from saferun.core.rollback.reconciliation import ReconciliationAgent  # the seed's Pattern 4 import

    assert ReconciliationAgent.__name__ == "ReconciliationAgent"


def test_migrations_produce_the_declared_schema(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from saferun.storage.database import Database
    from saferun.storage.schema import metadata

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
