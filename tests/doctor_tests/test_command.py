"""``study doctor`` end to end: the real CLI on a user's own train/validation split, its table,
``doctor.json``, page and MLflow run; bad input; ``study run --doctor``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from study.doctor.runner import CHECKS
from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.slow


def write_split(path, *, scale_val: float = 1.0, flip: float = 0.0, own_val_norm: bool = False,
                seed: int = 0):
    """Digits as the user's own split (``x_train, y_train, x_val, y_val``), optionally with a
    planted fault: validation inputs scaled, or standardized with their own statistics while
    training stays raw, or a fraction of training labels flipped."""
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(
        x, bunch.target, test_size=0.2, random_state=seed, stratify=bunch.target)
    flipped = np.array([], dtype=int)
    if flip:
        rng = np.random.default_rng(seed)
        flipped = rng.choice(len(y_train), int(flip * len(y_train)), replace=False)
        y_train = y_train.copy()
        y_train[flipped] = (y_train[flipped] + rng.integers(1, 10, len(flipped))) % 10
    x_val = x_val * scale_val
    if own_val_norm:
        x_val = (x_val - x_val.mean()) / x_val.std()
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return f"npz:{path}", flipped


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, mlflow_template_db):
    """``study doctor`` once on clean digits given as the user's own split."""
    import shutil

    tmp = tmp_path_factory.mktemp("doctor")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    spec, _ = write_split(tmp / "digits.npz")
    result = run_cli(["doctor", "--dataset", spec, "--output-dir", str(tmp / "out"),
                      "--experiment", "doc"], cwd=tmp, env=cli_env(tracking), timeout=600)
    return tmp, tracking, result


def test_clean_digits_pass_every_check_and_exit_0(clean_run):
    tmp, _, result = clean_run
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp / "out" / "doctor.json").read_text())
    assert [c["name"] for c in doc["checks"]] == list(CHECKS)
    assert [c["name"] for c in doc["checks"] if c["status"] == "fail"] == []
    assert doc["inputs"]["split"] == "given" and doc["inputs"]["n_val"] == 360
    assert doc["status"] in ("pass", "warn")


def test_the_answer_comes_first_then_the_table_of_every_check(clean_run):
    _, _, result = clean_run
    lines = result.stdout.splitlines()
    assert lines[0].startswith("doctor: pass: all 9 checks passed") or \
        lines[0].startswith("doctor: warn: no check failed; "), lines[0]
    assert lines[-1].startswith("wrote ")
    rows = [line.split()[:2] for line in lines[3:-1] if line and not line.startswith(" ")]
    assert [r[0] for r in rows] == list(CHECKS)
    assert all(r[1] in ("pass", "warn") for r in rows)
    # Progress went to stderr, one line per check.
    assert sum(line.startswith("doctor [") for line in result.stderr.splitlines()) == 9


def test_the_run_holds_the_files_and_the_statuses(clean_run):
    _, tracking, _ = clean_run
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("doc").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["study.role"] == "doctor"
    assert run.info.run_name == "doctor-cnn-w16-lr0.001-bs64"
    assert run.data.tags["study.doctor.lr"] in ("pass", "warn")
    assert run.data.metrics["doctor/failed"] == 0
    assert run.data.params["doctor.width"] == "16"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "doctor")}
    assert {"doctor/doctor.json", "doctor/doctor.html", "doctor/figures"} <= logged


def test_a_second_run_in_the_same_folder_keeps_and_logs_only_its_own_files(tmp_path,
                                                                          tracking_uri):
    """Found by a first user: an earlier run's suspects list and figures stayed beside the new
    doctor.json and went to the new MLflow run."""
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    for stale in ("outliers_suspects.csv", "figures/labels.png"):
        (out / stale).write_text("from an earlier run")
    (out / "notes.txt").write_text("the user's own")
    result = run_cli(["doctor", "--checks", "lr", "--output-dir", str(out), "--experiment",
                      "again"], cwd=tmp_path, env=cli_env(tracking_uri), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "outliers_suspects.csv").exists()
    assert not (out / "figures" / "labels.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own"
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("again").experiment_id])
    top = {a.path for a in client.list_artifacts(run.info.run_id, "doctor")}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "doctor/figures")}
    assert top == {"doctor/doctor.json", "doctor/doctor.html", "doctor/figures"}
    assert figures == {"doctor/figures/lr.png"}


def test_a_failed_check_is_said_first_and_exits_1_without_an_error_line(tmp_path,
                                                                        tracking_uri):
    result = run_cli(["doctor", "--checks", "lr", "--lr", "3", "--output-dir",
                      str(tmp_path / "out")], cwd=tmp_path, env=cli_env(tracking_uri),
                     timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == "doctor: fail: 1 of 1 check failed (lr)"
    assert "error" not in result.stderr  # a finding, not a failure of the command
    doc = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert doc["status"] == "fail"


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, tracking_uri):
    result = run_cli(["doctor", "--dataset", f"npz:{tmp_path / 'missing.npz'}",
                      "--output-dir", str(tmp_path / "out")], cwd=tmp_path,
                     env=cli_env(tracking_uri))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: `dataset` must name an existing .npz file, but got no file at "
        f"{tmp_path / 'missing.npz'}."]
    assert not (tmp_path / "out").exists()
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def _bad_file(kind: str) -> dict[str, np.ndarray]:
    """Arrays of 4 classes of 16x16 images with one fault each (found by a user)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 1, 16, 16)).astype(np.float32), np.arange(40) % 4
    if kind == "float-label":
        return {"X": x, "y": np.where(np.arange(40) == 5, 3.5, y).astype(np.float64)}
    if kind == "one-val-label":
        return {"x_train": x, "y_train": y, "x_val": x[:8], "y_val": np.full(8, 7)}
    return {"x_train": x, "y_train": y, "x_val": x[:8, :, :8, :8], "y_val": y[:8]}


@pytest.mark.parametrize(("kind", "message"), [
    ("float-label", "`y` must hold integer class labels, but got 1 non-integer values (e.g. "
                    "3.5)."),
    ("one-val-label", "`y_val` must hold labels in 0..3 (the classes of y_train), but got only "
                      "label 7."),
    ("val-shape", "`x_val` must have the sample shape of `x_train`, (1, 16, 16), but got "
                  "sample shape (1, 8, 8) (x_val.shape=(8, 1, 8, 8))."),
])
def test_bad_arrays_are_named_in_plain_numbers(tmp_path, tracking_uri, kind, message):
    """Found by a user: ``np.float64(3.5)``, ``labels 7..7``, and a sample shape set against
    a whole array's shape."""
    np.savez(tmp_path / "bad.npz", **_bad_file(kind))
    result = run_cli(["doctor", "--dataset", f"npz:{tmp_path / 'bad.npz'}",
                      "--output-dir", str(tmp_path / "out")], cwd=tmp_path,
                     env=cli_env(tracking_uri))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


def test_an_unknown_check_is_a_usage_error(tmp_path):
    result = run_cli(["doctor", "--checks", "lr,vibes"], cwd=tmp_path, env=cli_env())
    assert result.returncode == 2
    assert "'--checks': must be among labels" in result.stderr
    assert result.stderr.rstrip().endswith("but got vibes.")


FAULTS = {
    # fault: (dataset variant, flags, the one check that must fail)
    "flipped labels": ({"flip": 0.2}, {}, "labels"),
    "validation scaled": ({"scale_val": 3.0}, {}, "preprocessing"),
    # Found by a first user: the labels check failed too, advising to align x and y.
    "validation standardized alone": ({"own_val_norm": True}, {}, "preprocessing"),
    "lr far too high": ({}, {"lr": 1.0}, "lr"),
    "weights x10 at init": ({}, {"model": "tests/doctor_tests/models.py:scaled_cnn"}, "init"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_planted_fault_fails_its_own_check_and_no_other(fault, tmp_path):
    from study.config import StudyConfig
    from study.doctor import run_checks
    from study.doctor.command import load_inputs
    from study.training import HParams

    variant, flags, own = FAULTS[fault]
    spec, flipped = write_split(tmp_path / "data.npz", **variant)
    config = StudyConfig(dataset=spec, model=flags.get("model", "cnn"), device="cpu")
    hp = HParams(width=16, lr=flags.get("lr", 1e-3), batch_size=64, weight_decay=1e-4)
    results = {r.name: r for r in run_checks(load_inputs(config, hp))}
    assert [n for n, r in results.items() if r.status == "fail"] == [own], {
        n: r.evidence for n, r in results.items() if r.status != "pass"}
    if len(flipped):
        suspects = results["labels"].details["suspects"]
        top = suspects[:len(flipped) // 2]
        hits = len(set(top) & {f"x_train[{i}]" for i in flipped})
        assert hits >= 0.9 * len(top)


def test_run_with_doctor_stops_before_the_study_on_a_failed_check(tmp_path, tracking_uri):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(["run", "--doctor", "--study-name", "hot", "--storage", storage,
                      "--lr-min", "0.5", "--lr-max", "2", "--n-trials", "1", "--epochs", "1",
                      "--width-max", "8"],
                     cwd=tmp_path, env=cli_env(tracking_uri), timeout=600)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: doctor: lr failed on the search's most demanding corner "
                           "(--width-max 8, --lr-max 2, --batch-sizes' smallest ")
    assert last.endswith("the study was not started")
    assert (tmp_path / "reports" / "hot" / "doctor" / "doctor.json").is_file()
    assert optuna.get_all_study_names(storage) == []


def test_run_with_doctor_runs_the_study_when_no_check_fails(tmp_path, tracking_uri):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(["run", "--doctor", "--study-name", "ok", "--storage", storage,
                      "--n-trials", "1", "--epochs", "1", "--width-max", "8"],
                     cwd=tmp_path, env=cli_env(tracking_uri), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "ok" / "doctor" / "doctor.json").read_text())
    assert doc["inputs"]["width"] == 8 and doc["inputs"]["lr"] == 0.01  # the search's corner
    assert len(optuna.load_study(study_name="ok", storage=storage).trials) == 1


@pytest.mark.parametrize("model", ["vgg", "resnet", "tests/doctor_tests/models.py:small_net"])
def test_clean_digits_fail_no_check_on_other_models(model, tmp_path):
    from study.config import StudyConfig
    from study.doctor import run_checks
    from study.doctor.command import load_inputs
    from study.training import HParams

    spec, _ = write_split(tmp_path / "data.npz")
    config = StudyConfig(dataset=spec, model=model, device="cpu")
    # Width 8: half the cost of the default 16, the same layers.
    hp = HParams(width=8, lr=1e-3, batch_size=64, weight_decay=1e-4)
    results = run_checks(load_inputs(config, hp))
    assert [r.name for r in results if r.status == "fail"] == [], {
        r.name: r.evidence for r in results if r.status != "pass"}
