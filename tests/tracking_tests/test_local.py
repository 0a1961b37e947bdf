"""A local SQLite tracking store in a folder that is not there is refused, not created."""

from __future__ import annotations

import pytest

from study.errors import TrackingError
from study.tracking import Tracker


def test_a_missing_folder_is_refused_and_not_made(tmp_path):
    uri = f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match=(
            rf"^`tracking_uri` could not be opened: {uri}: {tmp_path / 'typo'} does not "
            rf"exist; create it first\.$")):
        Tracker(uri)
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(TrackingError, match=r"file is not a folder\.$"):
        Tracker(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")


def test_an_existing_folder_opens_a_new_store(tmp_path):
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", retry_seconds=0)
    assert (tmp_path / "mlflow.db").is_file()


def test_the_default_store_is_checked_like_a_given_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'typo' / 'm.db'}")
    with pytest.raises(TrackingError, match=r"typo does not exist; create it first\.$"):
        Tracker()


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:{tmp}/m.db?uri=true"])
def test_stores_without_a_plain_file_path_are_not_checked(tmp_path, uri):
    Tracker(uri.format(tmp=tmp_path), retry_seconds=0)  # no error


def test_a_query_string_does_not_hide_a_missing_folder(tmp_path):
    with pytest.raises(TrackingError, match=r"typo does not exist"):
        Tracker(f"sqlite:///{tmp_path / 'typo' / 'm.db'}?timeout=5")
