"""A user's own model and images, end to end through the real ``study`` console script: a factory
in a file in a temp directory, a folder of real PNG files written with Pillow, real stores.

Bad factories run concurrently in one module fixture (each subprocess pays seconds of imports);
each must give one line, exit 1, and leave no study and no run.
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from PIL import Image

from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.slow

FACTORY = """
from torch import nn

def build(width, *, input_shape, n_classes):
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes))
"""

BROKEN = {
    "import_fails": ("import torchvision_that_is_not_installed\n",
                     "could not be imported: ModuleNotFoundError"),
    "ignores_width": (FACTORY.replace("def build(width,", "def build(_width,").replace(
        "    c = input_shape[0]", "    c, width = input_shape[0], 4"),
        "must have more parameters at a larger width"),
    "wrong_output_shape": (FACTORY.replace("nn.Linear(2 * width, n_classes)",
                                           "nn.Linear(2 * width, 7)"),
                           "to logits of shape (2, 3), but returned (2, 7)"),
    "raises": ("def build(width, *, input_shape, n_classes):\n"
               "    raise NotImplementedError('3D only')\n",
               "raised at width=2 (net.py:2): NotImplementedError: 3D only"),
}


def write_images(root: Path, *, per_class: int = 12, size=(12, 14)) -> Path:
    """Three classes of RGB PNGs: a bright square in a different corner per class."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("left", "middle", "right")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(*size, 3)).astype(np.uint8)
            col = label * (size[1] // 3)
            pixels[2:8, col:col + 4] = 255
            Image.fromarray(pixels, "RGB").save(root / name / f"{i:02d}.png")
    return root


def _tracking(template: Path, directory: Path) -> str:
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def _study_args(storage: str, model: str, images: Path, *extra: str) -> list[str]:
    return ["run", "--storage", storage, "--model", model, "--dataset", f"imagefolder:{images}",
            "--n-trials", "4", "--epochs", "1", "--width-min", "2", "--width-max", "8",
            "--batch-sizes", "8", "--sampler", "random", "--pruner", "none", "--device", "cpu",
            *extra]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images") / "shapes")


@pytest.fixture(scope="module")
def own_study(tmp_path_factory, mlflow_template_db, images):
    d = tmp_path_factory.mktemp("own")
    (d / "net.py").write_text(textwrap.dedent(FACTORY))
    storage, tracking = f"sqlite:///{d / 'optuna.db'}", _tracking(mlflow_template_db, d)
    env = cli_env(tracking, STUDY_CACHE_DIR=str(d / "cache"))
    run = run_cli(_study_args(storage, f"{d / 'net.py'}:build", images), cwd=d, env=env)
    probe = run_cli(["landscape", "--storage", storage, "--n-points", "5", "--device", "cpu"],
                    cwd=d, env=env)
    return d, storage, tracking, env, run, probe


def _runs(tracking: str, role: str) -> list:
    client = MlflowClient(tracking)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(ids, f"tags.`study.role` = '{role}'", run_view_type=ViewType.ALL)


def test_a_factory_on_an_image_folder_runs_every_trial(own_study):
    _, _, tracking, _, run, _ = own_study
    assert run.returncode == 0, run.stderr[-3000:]
    trials = _runs(tracking, "trial")
    assert len(trials) == 4
    assert {r.info.status for r in trials} == {"FINISHED"}


def test_parameter_counts_differ_across_widths(own_study):
    trials = _runs(own_study[2], "trial")
    by_width = {int(r.data.params["width"]): int(r.data.params["n_params"]) for r in trials}
    assert len(by_width) >= 2
    widths = sorted(by_width)
    assert [by_width[w] for w in widths] == sorted(set(by_width.values()))


def test_the_penalty_is_logged_on_the_users_model(own_study):
    client = MlflowClient(own_study[2])
    for run in _runs(own_study[2], "trial"):
        history = client.get_metric_history(run.info.run_id, "train/penalty")
        assert history and all(m.value > 0 for m in history)
        metrics, wd = run.data.metrics, float(run.data.params["weight_decay"])
        # Before the first update: the penalty is weight decay times the kernels' squared norm.
        assert metrics["init/penalty"] == pytest.approx(wd * metrics["init/weight_sq_norm"],
                                                        rel=1e-6)
        assert metrics["init/loss"] == pytest.approx(
            metrics["init/data_loss"] + metrics["init/penalty"], rel=1e-9)


def test_the_model_string_and_source_hash_are_kept(own_study):
    d, storage, tracking, *_ = own_study
    spec = f"{d / 'net.py'}:build"
    (parent,) = _runs(tracking, "parent")
    digest = hashlib.sha256(textwrap.dedent(FACTORY).encode()).hexdigest()
    assert parent.data.params["model"] == spec
    assert parent.data.tags["study.model_sha256"] == digest
    study = optuna.load_study(study_name="cnn-width", storage=storage)
    assert study.user_attrs["study_config"]["model"] == spec
    assert study.user_attrs["model_sha256"] == digest
    for run in _runs(tracking, "trial"):
        assert run.data.params["model"] == spec
        assert run.data.params["input_shape"] == "3x12x14"  # the size the folder resolved to


def test_the_landscape_probe_works_on_the_users_model(own_study):
    _, _, tracking, _, _, probe = own_study
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert "sharpness=" in probe.stdout and "flatness_radius" in probe.stdout
    assert "/landscape/trial-" in probe.stdout and "/landscape/landscape_" not in probe.stdout
    assert "Downloading artifacts" not in probe.stderr  # one useful line, no progress bar
    client = MlflowClient(tracking)
    probed = [r for r in _runs(tracking, "trial") if "landscape/sharpness" in r.data.metrics]
    assert len(probed) == 1
    paths = {a.path for a in client.list_artifacts(probed[0].info.run_id, "landscape")}
    assert "landscape/landscape_1d.png" in paths


def test_a_resumed_study_with_a_changed_factory_is_told_so(own_study, images):
    d, storage, tracking, env, _, _ = own_study
    (d / "net.py").write_text(textwrap.dedent(FACTORY).replace("nn.ReLU()", "nn.GELU()"))
    again = run_cli(["run", "--storage", storage, "--n-trials", "5"], cwd=d, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "changed since study 'cnn-width' was created" in again.stderr
    (parent,) = _runs(tracking, "parent")
    assert parent.data.tags["study.model_sha256"] == \
        hashlib.sha256((d / "net.py").read_bytes()).hexdigest()


# --- broken factories: one line, exit 1, no study, no run ------------------------------------


def _broken(case: str, base: Path, template: Path, images: Path):
    d = base / case
    d.mkdir()
    (d / "net.py").write_text(BROKEN[case][0])
    storage = f"sqlite:///{d / 'optuna.db'}"
    tracking = _tracking(template, d)
    proc = run_cli(_study_args(storage, f"{d / 'net.py'}:build", images), cwd=d,
                   env=cli_env(tracking, STUDY_CACHE_DIR=str(d / "cache")))
    return d, storage, tracking, proc


@pytest.fixture(scope="module")
def broken_outcomes(tmp_path_factory, mlflow_template_db, images):
    base = tmp_path_factory.mktemp("broken")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(_broken, case, base, mlflow_template_db, images)
                   for case in BROKEN}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_factory_is_one_line_and_exit_1(broken_outcomes, case):
    d, _, _, proc = broken_outcomes[case]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: `model` '{d / 'net.py'}:build'")
    assert BROKEN[case][1] in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_factory_leaves_no_study_and_no_run(broken_outcomes, case):
    _, storage, tracking, _ = broken_outcomes[case]
    path = Path(storage.removeprefix("sqlite:///"))
    assert not path.exists() or optuna.study.get_all_study_names(storage=storage) == []
    client = MlflowClient(tracking)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    assert client.search_runs(ids, run_view_type=ViewType.ALL) == []
