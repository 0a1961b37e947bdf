"""``study landscape --between A,B`` on a real tiny study (two trials of one width, digits,
real SQLite stores): the line's ends are the trials' own weights, BatchNorm's variance stays
positive past them, and both runs get the figure and the barrier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from study.config import StudyConfig
from study.errors import ConfigError
from study.landscape.between import build_plot_between, interpolated_state, parse_between
from study.landscape.command import probe_between
from study.runtime.lifecycle import load_study, prepare_study
from study.runtime.session import run_session

ENV = ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
       "STUDY_STORAGE")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """Two trials of width 4 (different seeds and learning rates) and one of width 6."""
    root = tmp_path_factory.mktemp("between")
    shutil.copyfile(mlflow_template_db, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        mp.chdir(root)
        config = StudyConfig(
            study_name="pair", storage=f"sqlite:///{root / 'optuna.db'}",
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment="exp", epochs=2,
            width_min=4, width_max=6, batch_sizes=(64,), n_trials=3, device="cpu",
            pruner="none", sampler="random",
        )
        study = load_study(prepare_study(config)).study
        for width in (4, 4, 6):
            study.enqueue_trial({"width": width})
        run_session(config)
        yield config, root


def test_the_line_ends_at_the_two_trials_and_is_logged_to_both_runs(pair, tmp_path):
    config, _ = pair
    line, png, runs = probe_between(config, between="0,1", output_dir=tmp_path, n_points=9)
    trials = optuna.load_study(study_name="pair", storage=config.storage).trials
    assert line.ts[0] == -0.5 and line.ts[-1] == 1.5 and {0.0, 1.0} <= set(line.ts)
    # The ends are the trials' own final weights: their validation loss as the trial logged it.
    for t, trial in ((0.0, trials[0]), (1.0, trials[1])):
        i = list(line.ts).index(t)
        assert line.val_loss[i] == pytest.approx(trial.user_attrs["final_val_loss"], rel=1e-4)
        assert line.val_accuracy[i] == pytest.approx(trial.user_attrs["final_val_accuracy"])
    assert line.barrier >= -1e-9  # the chord's own ends are on the curve
    client = MlflowClient(config.tracking_uri)
    for run_id, other in zip(runs, (1, 0), strict=True):
        run = client.get_run(run_id)
        assert run.data.metrics[f"landscape/barrier_to_trial_{other:04d}"] == \
            pytest.approx(line.barrier)
        names = {f.path for f in client.list_artifacts(run_id, "landscape/between-0000-0001")}
        assert names == {"landscape/between-0000-0001/interpolation.png",
                         "landscape/between-0000-0001/interpolation.json"}
    assert png.read_bytes().startswith(b"\x89PNG")
    document = json.loads((png.parent / "interpolation.json").read_text())
    assert document["trials"] == [0, 1] and document["barrier"] == pytest.approx(line.barrier)


def test_the_figure_draws_train_and_validation_against_t(pair, tmp_path):
    config, _ = pair
    line, _, _ = probe_between(config, between="1,0", output_dir=tmp_path, n_points=5)
    figure = build_plot_between(line, "t", labels=("A: trial 1", "B: trial 0"))
    loss_ax, accuracy_ax = figure.axes
    assert [ln.get_label() for ln in loss_ax.get_lines()[:2]] == ["train", "validation"]
    assert list(loss_ax.get_lines()[0].get_xdata()) == list(line.ts)
    assert list(accuracy_ax.get_lines()[1].get_ydata()) == list(line.val_accuracy)
    assert loss_ax.get_xlabel() == "t: (1 - t) A + t B"
    assert "barrier" in figure._suptitle.get_text()


def test_trials_of_different_widths_cannot_be_interpolated(pair, tmp_path):
    config, _ = pair
    with pytest.raises(ConfigError, match=r"`between` must name two trials of the same "
                                          r"architecture, but got between=0,2: widths 4 and 6"):
        probe_between(config, between="0,2", output_dir=tmp_path)


@pytest.mark.parametrize("bad", ["1", "1,1", "1,2,3", "a,b", "", "-1,2"])
def test_bad_between_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"`between` must be two different trial numbers A,B"):
        parse_between(bad)


def test_running_variance_stays_positive_beyond_the_ends():
    a = {"bn.running_var": torch.tensor([1e-3, 2.0]), "w": torch.tensor([0.0, 1.0]),
         "bn.num_batches_tracked": torch.tensor(7)}
    b = {"bn.running_var": torch.tensor([4.0, 1e-3]), "w": torch.tensor([2.0, -1.0]),
         "bn.num_batches_tracked": torch.tensor(9)}
    for t in (-0.5, 0.0, 0.5, 1.0, 1.5):
        state = interpolated_state(a, b, t)
        assert bool((state["bn.running_var"] > 0).all())
        assert torch.allclose(state["w"], (1 - t) * a["w"] + t * b["w"])
        assert int(state["bn.num_batches_tracked"]) == 7
    assert torch.allclose(interpolated_state(a, b, 1.0)["bn.running_var"], b["bn.running_var"])
    # A linear blend would go negative here; the geometric one does not.
    assert float((1.5 * a["bn.running_var"] - 0.5 * b["bn.running_var"])[0]) < 0
