"""Tests of the ``study`` console script, run for real in subprocesses.

A subprocess that reads data or trains pays seconds of imports (torch, MLflow), so the bad-input
cases run concurrently in one module fixture and the tests only inspect their outcome; the
resume scenario trains real (tiny) trials.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from study._validation import check_fixed_hparams
from study.cli import main as cli_main
from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Outcome:
    """A finished ``study`` subprocess and the stores it was pointed at."""

    cwd: Path
    storage: str
    tracking_uri: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _tracking_copy(template: Path, directory: Path) -> str:
    path = directory / "mlflow.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def _run(args: list[str], cwd: Path, storage: str, tracking_uri: str) -> Outcome:
    proc = run_cli(args, cwd=cwd, env=cli_env(tracking_uri))
    return Outcome(cwd, storage, tracking_uri, proc.returncode, proc.stdout, proc.stderr)


def _study_names(storage: str) -> list[str]:
    """Study names in an SQLite storage; none when its file does not exist (nothing created)."""
    path = Path(storage.removeprefix("sqlite:///"))
    if not path.exists():
        return []
    return optuna.study.get_all_study_names(storage=storage)


def _all_runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    assert experiments, "the tracking store should at least hold the Default experiment"
    return client.search_runs([e.experiment_id for e in experiments],
                              run_view_type=ViewType.ALL)


def _stderr_lines(outcome: Outcome) -> list[str]:
    return [line for line in outcome.stderr.splitlines() if line.strip()]


def _finished_trials(storage: str, name: str = "cnn-width") -> list:
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,
                                    optuna.trial.TrialState.PRUNED))


# --- bad input: one line, exit 1 (2 for usage errors), nothing created ---------------------------


def _npz_nan(d: Path) -> list[str]:
    x = np.random.default_rng(0).normal(size=(40, 6, 6)).astype(np.float32)
    x[3, 2, 1] = np.nan
    np.savez(d / "nan.npz", X=x, y=np.arange(40) % 2)
    return ["--dataset", f"npz:{d / 'nan.npz'}"]


def _npz_short_y(d: Path) -> list[str]:
    x = np.random.default_rng(0).normal(size=(40, 6, 6)).astype(np.float32)
    np.savez(d / "short.npz", X=x, y=np.arange(39) % 2)
    return ["--dataset", f"npz:{d / 'short.npz'}"]


def _config_unknown_key(d: Path) -> list[str]:
    (d / "study.toml").write_text("epochs = 1\nbogus_key = 7\n")
    return ["--config", str(d / "study.toml")]


SECRET = "s3cretpw"

# id -> (extra args of `study run` given the case's directory, exit code, expected substrings)
BAD_INPUTS = {
    "lr_min_negative": (lambda d: ["--lr-min", "-1"], 1, ["`lr_min`", "lr_min=-1.0"]),
    "lr_min_above_max": (lambda d: ["--lr-min", "0.1", "--lr-max", "0.01"], 1,
                         ["`lr_min`", "lr_min=0.1", "lr_max=0.01"]),
    "dataset_unknown": (lambda d: ["--dataset", "foo"], 1, ["`dataset`", "dataset='foo'"]),
    "model_unknown": (lambda d: ["--model", "resnet50"], 1, ["`model`", "model='resnet50'"]),
    "penalty_mode_unknown": (lambda d: ["--penalty-mode", "l2"], 1,
                             ["`penalty_mode`", "penalty_mode='l2'"]),
    "storage_not_a_url": (lambda d: ["--storage", "notaurl"], 1,
                          ["`storage`", "storage='notaurl'"]),
    "storage_malformed_with_password": (
        lambda d: ["--storage", f"postgresql://u:{SECRET}@/x"], 1,
        ["`storage`", "storage='postgresql://u:***@/x'"]),
    "npz_with_nan": (_npz_nan, 1, ["`X`", "NaN"]),
    "npz_length_mismatch": (_npz_short_y, 1, ["`y`", "`X` (40)", "len(y)=39"]),
    "config_unknown_key": (_config_unknown_key, 1, ["unknown setting `bogus_key`"]),
    "study_name_is_a_path": (lambda d: ["--study-name", "../x"], 1,
                             ["`study_name`", "study_name='../x'"]),
    "lr_min_not_a_number": (lambda d: ["--lr-min", "abc"], 2, ["--lr-min", "'abc'"]),
    "batch_size_above_the_training_split": (
        lambda d: ["--batch-sizes", "32,4096"], 1,
        ["`batch_sizes`", "<= the 1437 training samples of digits", "batch_sizes='32,4096'"]),
}


@pytest.fixture(scope="module")
def bad_input_outcomes(tmp_path_factory, mlflow_template_db) -> dict[str, Outcome]:
    """Every bad-input case run once, concurrently, each with its own stores."""
    jobs = {}
    for case, (make_args, _, _) in BAD_INPUTS.items():
        d = tmp_path_factory.mktemp(f"bad-{case}")
        storage = f"sqlite:///{d / 'optuna.db'}"
        # Our storage first: a case's own --storage comes later and wins.
        args = ["run", "--storage", storage, "--n-trials", "1", "--epochs", "1", *make_args(d)]
        jobs[case] = (args, d, storage, _tracking_copy(mlflow_template_db, d))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(_run, *job) for case, job in jobs.items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exit_code(bad_input_outcomes, case):
    assert bad_input_outcomes[case].returncode == BAD_INPUTS[case][1], (
        bad_input_outcomes[case].output)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_naming_field_and_value(bad_input_outcomes, case):
    outcome = bad_input_outcomes[case]
    lines = _stderr_lines(outcome)
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: ")
    for expected in BAD_INPUTS[case][2]:
        assert expected in lines[0]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_prints_nothing_on_stdout(bad_input_outcomes, case):
    assert bad_input_outcomes[case].stdout == ""


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_prints_no_traceback(bad_input_outcomes, case):
    assert "Traceback" not in bad_input_outcomes[case].output


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_creates_no_study(bad_input_outcomes, case):
    outcome = bad_input_outcomes[case]
    # The explicit storage, which is also where the default sqlite:///optuna.db would point.
    assert _study_names(outcome.storage) == []


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_creates_no_mlflow_run(bad_input_outcomes, case):
    assert _all_runs(bad_input_outcomes[case].tracking_uri) == []


def test_bad_input_never_prints_the_password(bad_input_outcomes):
    assert SECRET not in bad_input_outcomes["storage_malformed_with_password"].output


# --- help and status ----------------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0
    assert {"run", "trial", "status"} <= set(proc.stdout.split())


def test_help_gives_every_command_a_whole_summary_in_80_columns(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path, env={**cli_env(), "COLUMNS": "80"})
    listed = proc.stdout.split("Commands:")[1].strip().splitlines()
    assert len(listed) == 9
    assert all(len(line) <= 80 and not line.endswith("...") for line in listed), listed


def test_run_help_lists_the_flags(tmp_path):
    proc = run_cli(["run", "--help"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0
    assert "--n-trials" in proc.stdout
    assert "--penalty-mode" in proc.stdout


def _help_text(command: str) -> str:
    """``study COMMAND --help``, its lines joined (wrapping aside)."""
    from click.testing import CliRunner

    from study.cli import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_explain_help_gives_explains_own_defaults():
    from study.explain import EXPLAIN_EPOCHS, GAP_EPOCHS

    text = _help_text("explain")
    assert f"[default: {EXPLAIN_EPOCHS} for --question size, {GAP_EPOCHS} for gap]" in text
    assert "[default: named after the question and its settings" in text
    assert "[default: cnn-width]" not in text and "per trial. [default: 3]" not in text


def test_worker_help_says_it_joins_an_existing_study():
    text = _help_text("worker")
    assert "created or resumed" not in text
    assert "Name of the existing Optuna study to join (study run creates it). " \
           "[default: cnn-width]" in text
    # What defines the study, and its budget, are the study's (found by a first user: the
    # help said 3 epochs for a worker that trained the study's 1).
    assert "Training epochs per trial. [default: the study's; another value is refused]" \
        in text
    assert "[default: 3]" not in text and "[default: the study's budget]" in text


def test_explain_help_says_its_training_options_are_fixed_or_crossed_not_searched():
    text = _help_text("explain")
    assert "are searched" not in text and "searched." not in text
    assert "adam, sgd or adamw: one for --question size; several (comma-separated) are " \
           "crossed for --question gap. [default: adam]" in text
    assert "--question size pairs each trial with a control under none). " \
           "[default: l2-in-loss]" in text


@pytest.mark.parametrize("command", ["run", "worker", "explain", "doctor", "trial", "analyze",
                                     "report", "status"])
def test_no_flag_states_its_default_twice(command):
    import re

    assert not re.search(r"\(default:[^)]*\)\.? \[default:", _help_text(command))


@pytest.mark.parametrize("command", ["doctor", "trial"])
def test_one_configuration_commands_describe_one_value_not_a_search(command):
    text = _help_text(command)
    assert "searched" not in text and "sampler" not in text
    assert "--storage-timeout" not in text and "--storage " not in text
    assert "adam, sgd or adamw (one). [default: adam]" in text
    assert "Seed of the data split and the training. [default: 0]" in text
    assert "study's runs" not in text  # no study: the experiment holds the command's run
    assert "MLflow experiment of the command's run. [default: study]" in text
    assert "Optuna minimizes" not in text and "per trial" not in text  # found by a new user


def test_doctor_help_lists_every_check_by_its_whole_name():
    """Found by a new user: the default list wrapped inside names ("lab els")."""
    from click.testing import CliRunner

    from study.cli import cli
    from study.doctor import CHECKS

    output = CliRunner().invoke(cli, ["doctor", "--help"]).output
    words = {w.strip(",]") for w in output.split()}
    assert set(CHECKS) <= words


def test_status_of_missing_database_is_one_line_and_creates_nothing(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    outcome = _run(["status", "--storage", storage, "--study-name", "nope"], tmp_path, storage,
                   tracking_uri)
    assert outcome.returncode == 1
    lines = _stderr_lines(outcome)
    assert len(lines) == 1, outcome.stderr
    assert "`storage`" in lines[0]
    assert "does not exist" in lines[0]
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_analyze_of_a_missing_study_and_store_is_one_error_line_no_warning(command, tmp_path):
    """Found by a first user: a warning that results are written locally only came before
    the error that there is nothing to analyze."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = _run([command, "--storage", storage, "--study-name", "nope"], tmp_path, storage,
                   tracking)
    assert outcome.returncode == 1
    assert _stderr_lines(outcome) == [
        f"error: `storage` must point to an existing study database, but got "
        f"storage='{storage}', which does not exist."]
    assert not list(tmp_path.iterdir())


def test_status_without_storage_names_the_study_stores_in_the_folder(tmp_path, tracking_uri):
    """Found by a new user: `study status` after a study on a journal file said only that
    the default sqlite:///optuna.db does not exist."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.create_study(study_name="cnn-width", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "optuna.journal"))))
    before = sorted(p.name for p in tmp_path.iterdir())
    outcome = _run(["status"], tmp_path, "", tracking_uri)
    assert outcome.returncode == 1
    assert _stderr_lines(outcome) == [
        "error: `storage` must point to an existing study database, but got "
        "storage='sqlite:///optuna.db', which does not exist; here: journal:optuna.journal "
        "(pass one as --storage)."]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_status_of_missing_study_is_one_line(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="other", storage=storage)
    outcome = _run(["status", "--storage", storage, "--study-name", "nope"], tmp_path, storage,
                   tracking_uri)
    assert outcome.returncode == 1
    lines = _stderr_lines(outcome)
    assert len(lines) == 1, outcome.stderr
    assert "`study_name`" in lines[0]
    assert "study_name='nope'" in lines[0]
    assert "Traceback" not in outcome.output


# --- create, conflict, resume -------------------------------------------------------------------


@pytest.fixture(scope="module")
def created_study(tmp_path_factory, mlflow_template_db) -> Outcome:
    """A study of one real (tiny) trial."""
    d = tmp_path_factory.mktemp("resume")
    storage = f"sqlite:///{d / 'optuna.db'}"
    return _run(["run", "--storage", storage, "--n-trials", "1", "--epochs", "1",
                 "--width-max", "8"], d, storage, _tracking_copy(mlflow_template_db, d))


@pytest.fixture(scope="module")
def resumed_study(created_study) -> Outcome:
    """The same study resumed to two trials without a conflicting flag."""
    assert created_study.returncode == 0, created_study.output
    return _run(["run", "--storage", created_study.storage, "--n-trials", "2"],
                created_study.cwd, created_study.storage, created_study.tracking_uri)


def test_run_prints_a_start_line_and_a_line_per_trial(created_study):
    lines = [line for line in created_study.stderr.splitlines() if line.startswith("[cnn-width]")]
    assert lines[0].startswith("[cnn-width] 0/1 finished; running trials on cpu")
    assert lines[-1].startswith("[cnn-width] 1/1 finished | trial 0 ")


def test_quiet_prints_no_progress_but_the_summary(tmp_path, mlflow_template_db):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    quiet = _run(["run", "--storage", storage, "--n-trials", "1", "--epochs", "1",
                  "--width-max", "8", "--quiet"], tmp_path, storage,
                 _tracking_copy(mlflow_template_db, tmp_path))
    assert quiet.returncode == 0, quiet.output
    assert "[cnn-width]" not in quiet.stderr
    assert "study 'cnn-width': 1/1 finished" in quiet.stdout


def test_run_names_the_objective_of_its_best_value(created_study):
    (best,) = [line for line in created_study.stdout.splitlines() if line.startswith("best ")]
    assert best.startswith("best val_loss "), best  # the default objective, by name


def test_run_creates_a_study_with_one_finished_trial(created_study):
    assert created_study.returncode == 0, created_study.output
    assert len(_finished_trials(created_study.storage)) == 1


def test_resume_with_conflicting_flag_is_one_line_naming_both_values(created_study):
    assert created_study.returncode == 0, created_study.output
    outcome = _run(["run", "--storage", created_study.storage, "--n-trials", "1",
                    "--epochs", "2"], created_study.cwd, created_study.storage,
                   created_study.tracking_uri)
    assert outcome.returncode == 1
    lines = _stderr_lines(outcome)
    assert len(lines) == 1, outcome.stderr
    assert "`epochs` conflicts with study 'cnn-width'" in lines[0]
    assert "epochs=1" in lines[0]
    assert "epochs=2" in lines[0]
    assert "Traceback" not in outcome.output


def test_an_experiment_from_the_environment_does_not_stop_a_resume(created_study):
    """Found by a user: a cluster-wide MLFLOW_EXPERIMENT_NAME stopped every worker with
    "conflicts ...; drop the flag", naming a flag nobody gave."""
    assert created_study.returncode == 0, created_study.output
    proc = run_cli(["run", "--storage", created_study.storage, "--n-trials", "1"],
                   cwd=created_study.cwd,
                   env={**cli_env(created_study.tracking_uri), "MLFLOW_EXPERIMENT_NAME": "other"})
    assert proc.returncode == 0, proc.stderr
    assert ("note: study 'cnn-width' keeps the settings it was created with: "
            "experiment='study' (MLFLOW_EXPERIMENT_NAME='other' applies to new studies).") \
        in proc.stderr.splitlines()
    assert "budget met" in proc.stderr + proc.stdout


def test_an_experiment_flag_that_differs_is_still_refused(created_study):
    assert created_study.returncode == 0, created_study.output
    outcome = _run(["run", "--storage", created_study.storage, "--n-trials", "1",
                    "--experiment", "other"], created_study.cwd, created_study.storage,
                   created_study.tracking_uri)
    assert outcome.returncode == 1
    assert "`experiment` conflicts with study 'cnn-width'" in outcome.stderr


def test_resume_without_conflict_succeeds(resumed_study):
    assert resumed_study.returncode == 0, resumed_study.output
    assert "2/2 finished" in resumed_study.stdout


def test_resume_reaches_two_finished_trials(resumed_study):
    assert len(_finished_trials(resumed_study.storage)) == 2


def test_resume_keeps_the_stored_settings(resumed_study):
    trials = _finished_trials(resumed_study.storage)
    assert [t.user_attrs["hparams"]["width"] <= 8 for t in trials] == [True, True]


def test_resume_logs_one_parent_and_two_trial_runs(resumed_study):
    roles = sorted(r.data.tags.get("study.role", "") for r in
                   _all_runs(resumed_study.tracking_uri))
    assert roles.count("parent") == 1
    assert len(roles) == 3


def test_status_prints_the_counts(resumed_study):
    outcome = _run(["status", "--storage", resumed_study.storage], resumed_study.cwd,
                   resumed_study.storage, resumed_study.tracking_uri)
    assert outcome.returncode == 0, outcome.output
    assert "study 'cnn-width'" in outcome.stdout
    assert "2 complete" in outcome.stdout
    assert "0 fail" in outcome.stdout


# --- a single trial -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_trial(tmp_path_factory, mlflow_template_db) -> Outcome:
    d = tmp_path_factory.mktemp("trial")
    return _run(["trial", "--epochs", "1", "--width", "4"], d, "",
                _tracking_copy(mlflow_template_db, d))


def test_trial_succeeds(single_trial):
    assert single_trial.returncode == 0, single_trial.output
    assert single_trial.stdout.startswith("run ")


def test_trial_creates_exactly_one_finished_single_run(single_trial):
    runs = _all_runs(single_trial.tracking_uri)
    assert [(r.data.tags.get("study.role"), r.info.status) for r in runs] == [
        ("single", "FINISHED")]


def test_trial_run_records_the_width(single_trial):
    (run,) = _all_runs(single_trial.tracking_uri)
    assert run.data.params["width"] == "4"
    assert run.data.params["epochs"] == "1"


@pytest.fixture(scope="module")
def sgd_trial(tmp_path_factory, mlflow_template_db) -> Outcome:
    d = tmp_path_factory.mktemp("sgd-trial")
    return _run(["trial", "--epochs", "1", "--width", "4", "--model", "vgg", "--optimizer",
                 "sgd", "--momentum", "0.5", "--dropout", "0.2", "--bn-momentum", "keras"],
                d, "", _tracking_copy(mlflow_template_db, d))


def test_a_trial_trains_with_the_training_options_it_was_given(sgd_trial):
    assert sgd_trial.returncode == 0, sgd_trial.output
    (run,) = _all_runs(sgd_trial.tracking_uri)
    params = run.data.params
    assert (params["optimizer"], params["momentum"], params["dropout"],
            params["bn_momentum"]) == ("sgd", "0.5", "0.2", "0.01")
    history = MlflowClient(sgd_trial.tracking_uri).get_metric_history(
        run.info.run_id, "gap/mode_batchnorm")
    assert [m.step for m in history] == [1]  # BatchNorm and dropout: the mode part is split


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--momentum", "0.5,0.9", "`momentum` must be a single value for one configuration, but got "
                              "momentum='0.5,0.9'."),
    ("--bn-momentum", "0", "`bn_momentum` must be in (0, 1], but got bn_momentum=0.0."),
    ("--optimizer", "rmsprop", "`optimizer` must be one of adam, sgd, adamw, but got "
                               "optimizer='rmsprop'."),
])
def test_a_trial_takes_one_value_of_each_training_option(tmp_path, monkeypatch, capsys, flag,
                                                         value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli_main(["trial", flag, value, "--epochs", "1"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("command", "flag", "value", "message"), [
    ("trial", "--batch-size", "1", "`batch_size` must be >= 2, but got batch_size=1."),
    ("trial", "--width", "0", "`width` must be > 0, but got width=0."),
    ("trial", "--lr", "0", "`lr` must be > 0, but got lr=0.0."),
    ("trial", "--weight-decay", "-0.1", "`weight_decay` must be >= 0, but got weight_decay=-0.1."),
    ("explain", "--batch-size", "1", "`batch_size` must be >= 2, but got batch_size=1."),
])
def test_fixed_values_are_named_as_their_flags(tmp_path, monkeypatch, capsys, command, flag,
                                               value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli_main([command, flag, value, "--epochs", "1"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert list(tmp_path.iterdir()) == []  # no store created


def test_the_boundary_values_of_the_fixed_flags_are_allowed():
    check_fixed_hparams(width=1, lr=1e-12, batch_size=2, weight_decay=0.0)  # raises nothing


@pytest.mark.parametrize(("size", "refused"), [(1437, False), (1438, True)])
def test_a_batch_size_may_be_the_whole_training_split_but_not_more(size, refused):
    from study.config import StudyConfig
    from study.errors import ConfigError
    from study.runtime.inputs import check_batch_sizes
    from study.training.data import load_dataset

    data = load_dataset("digits", seed=0)
    assert data.n_train == 1437
    config = StudyConfig(batch_sizes=(32, size))
    if refused:
        with pytest.raises(ConfigError, match=r"`batch_size` must be <= the 1437 training "
                                              r"samples of digits, but got batch_size=1438\."):
            check_batch_sizes(config, data, field="batch_size")
    else:
        check_batch_sizes(config, data)


@pytest.mark.parametrize(("value", "warned"), [("0.5", False), ("0.51", True), ("keras", False)])
def test_a_batchnorm_momentum_in_keras_terms_is_warned_about(tmp_path, monkeypatch, capsys,
                                                            value, warned):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # --momentum 0.5,0.9 stops `study trial` before anything is created.
    assert cli_main(["trial", "--bn-momentum", value, "--momentum", "0.5,0.9"]) == 1
    err = capsys.readouterr().err
    assert ("warning: `bn_momentum` 0.51 is in PyTorch's convention" in err) is warned
    assert err.strip().splitlines()[-1].startswith("error: `momentum` must be a single value")


def test_the_command_keeps_mlflows_database_creation_lines_out_of_its_output(tmp_path):
    # Found by a user: two INFO lines of MLflow amid the first run's output.
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['x']\n"
            "from study._cli_env import mlflow_env_defaults\n"
            "{call}"
            "import mlflow\n"
            "mlflow.MlflowClient('sqlite:///{db}').search_experiments()\n")
    seen = {}
    for name, call in (("plain", ""), ("command", "mlflow_env_defaults()\n")):
        proc = subprocess.run([sys.executable, "-c", code.format(call=call, db=tmp_path / name)],
                              capture_output=True, text=True, timeout=120, env=cli_env())
        assert proc.returncode == 0, proc.stderr
        seen[name] = "Creating initial MLflow database tables" in proc.stderr
    assert seen == {"plain": True, "command": False}  # MLflow says it; the command does not
