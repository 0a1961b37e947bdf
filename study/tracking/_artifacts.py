"""Artifacts of a run: model weights, tables and files, through ``MlflowClient``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from study.errors import TrackingError
from study.redact import one_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from study.tracking._closer import Closer

__all__ = ["ArtifactsMixin"]


class ArtifactsMixin:
    """The artifact calls of :class:`~study.tracking.Tracker` (its client, retries and
    background closer)."""

    client: MlflowClient
    _closer: Closer | None
    _nested: set[str]
    _call: Callable[..., Any]

    def log_state_dict(self, run_id: str, state_dict: Mapping[str, Any], path: str) -> None:
        """Save a model's ``state_dict`` with ``torch.save`` and log it as artifact ``path``
        (through ``MlflowClient.log_artifact``, from a temporary folder)."""
        import torch

        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        folder, _, name = path.rpartition("/")
        tmp = tempfile.mkdtemp(prefix="study-weights-")
        local = os.path.join(tmp, name)
        try:
            torch.save(tensors, local)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise TrackingError(f"could not log {path} to run {run_id}: "
                                f"{one_line(exc)}") from None
        if self._closer is not None and run_id in self._nested:
            self._closer.submit(self._upload, run_id, local, folder, tmp)
        else:
            self._upload(run_id, local, folder, tmp)

    def _upload(self, run_id: str, local: str, folder: str, tmp: str) -> None:
        """Log the file ``local`` under ``folder`` of ``run_id``, then remove ``tmp``."""
        try:
            self._call(self.client.log_artifact, run_id, local, artifact_path=folder or None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def log_table(self, run_id: str, table: Any, artifact_file: str) -> None:
        """Log a DataFrame as an MLflow table artifact (the UI's artifact view shows it as a
        table, and ``mlflow.load_table`` reads it back).

        Raises:
            TrackingError: The tracking store refused it.
        """
        self._call(self.client.log_table, run_id, data=table, artifact_file=artifact_file)

    def log_artifacts(self, run_id: str, local: str | os.PathLike[str], artifact_path: str) -> None:
        """Log ``local`` (a file, or a folder's files) under ``artifact_path`` of ``run_id``.

        Raises:
            TrackingError: The artifact store refused it.
        """
        local = os.fspath(local)
        try:
            if os.path.isdir(local):
                self.client.log_artifacts(run_id, local, artifact_path=artifact_path or None)
            else:
                self.client.log_artifact(run_id, local, artifact_path=artifact_path or None)
        except Exception as exc:  # artifact stores raise their own types (OSError, boto, ...)
            raise TrackingError(f"could not log {local} to run {run_id}: {one_line(exc)}") \
                from None

