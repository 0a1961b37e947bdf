"""A local SQLite tracking store whose folder does not exist: MLflow would create the folders
(a typo in ``--tracking-uri`` then logs a study to a new database nobody looks at), while the
Optuna storage of the same typo is refused (:func:`study.runtime.lifecycle.check_store_folder`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_local_folder"]


def check_local_folder(tracking_uri: str | None) -> None:
    """Refuse a ``sqlite:`` tracking URI (``None``: MLflow's own) whose file's folder is
    missing or not a folder.

    Raises:
        FileNotFoundError: Naming the folder and what to do.
    """
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return  # in memory, or an SQLite URI filename (?uri=true) that SQLite itself parses
    folder = Path(database).absolute().parent
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist; create it first"
        raise FileNotFoundError(f"{folder} {why}.")
