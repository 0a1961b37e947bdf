"""Plain SQL over another library's tables (Optuna's, MLflow's): whether a table still has the
columns a reader or writer uses, in the installed library's model and in the database (which
may predate or postdate it), and the dialects whose INSERT takes ON CONFLICT DO UPDATE."""

from __future__ import annotations

from typing import Any

__all__ = ["UPSERT_DIALECTS", "table_mismatch", "upsert_insert"]

# Dialects whose INSERT ... ON CONFLICT DO UPDATE writes a row or replaces it in one statement.
UPSERT_DIALECTS = {"sqlite": "sqlalchemy.dialects.sqlite",
                   "postgresql": "sqlalchemy.dialects.postgresql"}


def upsert_insert(dialect: str) -> Any:
    """The ``insert`` construct of ``dialect`` (one of :data:`UPSERT_DIALECTS`), whose
    statements have ``on_conflict_do_update``."""
    import importlib

    return importlib.import_module(UPSERT_DIALECTS[dialect]).insert


def table_mismatch(inspector: Any, table: Any, columns: tuple[str, ...], *,
                   owner: str) -> str | None:
    """What ``table`` (a SQLAlchemy ``Table`` of library ``owner``) or its database table
    (seen by ``inspector``) lacks of ``columns``; ``None`` when both have them all."""
    import sqlalchemy as sa

    missing = [c for c in columns if c not in table.c]
    if missing:
        return f"{owner}'s {table.name} has no {', '.join(missing)}"
    try:
        present = {c["name"] for c in inspector.get_columns(table.name)}
    except sa.exc.NoSuchTableError:
        return f"the database has no table {table.name}"
    missing = [c for c in columns if c not in present]
    if missing:
        return f"the database's {table.name} has no {', '.join(missing)}"
    return None
