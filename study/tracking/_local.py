"""A local SQLite tracking store whose folder does not exist: MLflow would create the folders
(a typo in ``--tracking-uri`` then logs a study to a new database nobody looks at), while the
Optuna storage of the same typo is refused (:func:`study.runtime.lifecycle.check_store_folder`).
"""

from __future__ import annotations

from study._validation import folder_problem, sqlite_file

__all__ = ["check_local_folder"]


def check_local_folder(tracking_uri: str | None) -> None:
    """Refuse a ``sqlite:`` tracking URI (``None``: MLflow's own) whose file's folder is
    missing or not a folder.

    Raises:
        FileNotFoundError: Naming the folder and what to do.
    """
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    problem = folder_problem(sqlite_file(uri)) if uri.startswith("sqlite:") else None
    if problem:
        raise FileNotFoundError(f"{problem}.")
