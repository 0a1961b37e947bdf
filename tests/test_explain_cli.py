"""`study explain` as a user runs it: the real console script in a subprocess (bad flags: the
CLI's own `main` in this process), real stores in a temporary folder, real training on digits.

The size question's experiment trains 32 trials (slow); the gap question's end to end run trains
4 tiny trials in two invocations, under a minute."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from study.analysis.gap_text import short_line
from tests.conftest import cli_env, run_cli

slow = pytest.mark.slow
SMALL = ["--width-min", "2", "--width-max", "32", "--n-widths", "4", "--replicates", "2",
         "--lr", "1e-5", "--n-bootstrap", "2", "--device", "cpu"]


def explain(tmp: Path, tracking_uri: str, *extra: str):
    return run_cli(["explain", "--storage", f"sqlite:///{tmp / 'optuna.db'}", *SMALL, *extra],
                   cwd=tmp, env=cli_env(tracking_uri), timeout=900)


@pytest.fixture(scope="module")
def strong(tmp_path_factory, mlflow_template_db):
    tmp = tmp_path_factory.mktemp("explain-strong")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return tmp, tracking_uri, explain(tmp, tracking_uri, "--weight-decay", "1e-2")


def early_code(stdout: str) -> str:
    """The early window's code from the verdict's second line ("Over the first ...: CODE.")."""
    lines = stdout.splitlines()
    assert lines[0].startswith("At initialization: "), stdout[:300]
    assert lines[1].startswith("Over the first "), stdout[:300]
    return lines[1].split(": ", 1)[1].split(".", 1)[0]


@slow
def test_a_strong_penalty_is_explained_by_the_penalty(strong):
    _, _, outcome = strong
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert early_code(outcome.stdout) == "penalty"
    assert "start higher once the weight decay exceeds" in outcome.stdout


@slow
def test_the_experiment_is_paired_trials_in_one_study(strong):
    tmp, _, _ = strong
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp / 'optuna.db'}")
    study = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{tmp / 'optuna.db'}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 4 * 2 * 2
    seeds: dict[int, set[str]] = {}
    for t in trials:
        seeds.setdefault(t.user_attrs["train_seed"], set()).add(t.params["penalty_mode"])
    assert all(modes == {"l2-in-loss", "none"} for modes in seeds.values())
    assert {t.params["width"] for t in trials} == {2, 5, 13, 32}


@slow
def test_the_verdict_is_on_the_parent_run_and_in_the_report(strong):
    tmp, tracking_uri, outcome = strong
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("study").experiment_id], "tags.`study.role` = 'parent'")
    assert parent.data.tags["study.verdict"] == "penalty"
    (report,) = (tmp / "reports").iterdir()
    document = json.loads((report / "analysis.json").read_text())
    assert document["design"]["explain"] is True  # its advice is in replicates, not study run
    verdict, _, where = parent.data.tags["mlflow.note.content"].partition("\n\nReport: ")
    assert verdict.split("\n")[2] == short_line(document["gap"])  # the third line
    assert all(paragraph in outcome.stdout for paragraph in verdict.split("\n\n"))
    assert "report/report.html" in where
    assert document["schema"] == "study.analysis/3" and document["init"]["threshold"]
    assert (report / "report.html").is_file()


@slow
def test_running_it_again_resumes_without_training(strong):
    tmp, tracking_uri, _ = strong
    again = explain(tmp, tracking_uri, "--weight-decay", "1e-2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every designed trial has run; nothing to run" in again.stderr
    assert early_code(again.stdout) == "penalty"


@slow
def test_a_weak_penalty_is_not_explained_by_the_penalty(tmp_path, tracking_uri):
    outcome = explain(tmp_path, tracking_uri, "--weight-decay", "1e-5")
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert early_code(outcome.stdout) != "penalty"


BAD_INPUT = {
    "penalty_mode": (["--penalty-mode", "l2-in-loss,none"],
                     "`penalty_mode` must be a single mode"),
    "n_widths": (["--n-widths", "2"], "`n_widths` must be an integer >= 3"),
    "replicates": (["--replicates", "0"], "`replicates` must be an integer >= 1"),
    "lr": (["--lr", "-1"], "`lr` must be > 0, but got lr=-1.0."),  # named as its flag
}


def _bad_input(case: str, base: Path, template: Path):
    tmp = base / case
    tmp.mkdir()
    shutil.copyfile(template, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return tmp, tracking_uri, explain(tmp, tracking_uri, *BAD_INPUT[case][0])


@slow
def test_another_grid_on_the_same_study_is_refused_in_one_line(strong):
    """A different --n-widths against an existing study would mix two designs (and strand the
    queued cells of one): refused before anything runs, the study unchanged."""
    tmp, tracking_uri, _ = strong
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    before = summary.n_trials

    outcome = explain(tmp, tracking_uri, "--weight-decay", "1e-2", "--n-widths", "3",
                      "--study-name", summary.study_name)

    assert outcome.returncode == 1
    assert outcome.stderr.strip().count("\n") == 0, outcome.stderr
    assert (f"`n_widths` must be a grid that holds the widths of study "
            f"{summary.study_name!r} (2, 5, 13, 32: --n-widths 4), not 2, 8, 32; another grid "
            f"is another study (--study-name NAME), but got n_widths=3.") in outcome.stderr
    (after,) = optuna.get_all_study_summaries(storage)
    assert after.n_trials == before


@slow
def test_another_lr_on_the_same_study_is_refused_naming_the_flag_to_pass(strong):
    """The study was made with --lr 1e-5: another --lr is refused in explain's own words (not
    the field lr_min it fills), with the flag that resumes it; nothing is created."""
    tmp, tracking_uri, _ = strong
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    client = MlflowClient(tracking_uri)
    runs = len(client.search_runs([client.get_experiment_by_name("study").experiment_id]))

    outcome = explain(tmp, tracking_uri, "--weight-decay", "1e-2", "--lr", "1e-4",
                      "--study-name", summary.study_name)

    assert outcome.returncode == 1
    assert outcome.stderr.strip() == (
        f"error: `lr` conflicts with study {summary.study_name!r}: it was created with "
        f"--lr 1e-05, but got --lr 0.0001; pass --lr 1e-05 to resume it, or a new "
        f"--study-name NAME.")
    (after,) = optuna.get_all_study_summaries(storage)
    assert after.n_trials == summary.n_trials
    assert len(client.search_runs([client.get_experiment_by_name("study").experiment_id])) == runs


@pytest.fixture(scope="module")
def bad_outcomes(tmp_path_factory, mlflow_template_db):
    """Every bad input at once: each subprocess pays its start-up, which a second core can
    overlap."""
    base = tmp_path_factory.mktemp("explain-bad")
    with ThreadPoolExecutor(max_workers=len(BAD_INPUT)) as pool:
        futures = {case: pool.submit(_bad_input, case, base, mlflow_template_db)
                   for case in BAD_INPUT}
        return {case: future.result() for case, future in futures.items()}


@slow
@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_and_creates_nothing(bad_outcomes, case):
    tmp, tracking_uri, outcome = bad_outcomes[case]
    message = BAD_INPUT[case][1]
    assert outcome.returncode == 1
    assert outcome.stderr.strip().count("\n") == 0 and message in outcome.stderr
    assert not (tmp / "optuna.db").exists()
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# --- the gap question: why validation lags training, and whether a setting changes it ----------

GAP = ["--question", "gap", "--model", "vgg", "--width-max", "2", "--optimizer", "adam",
       "--bn-momentum", "keras,pytorch", "--epochs", "2", "--n-bootstrap", "2", "--device", "cpu"]


def explain_gap(tmp: Path, tracking_uri: str, *extra: str):
    return run_cli(["explain", "--storage", f"sqlite:///{tmp / 'optuna.db'}", *GAP, *extra],
                   cwd=tmp, env=cli_env(tracking_uri), timeout=300)


@pytest.fixture(scope="module")
def gap_runs(tmp_path_factory, mlflow_template_db):
    """Two settings (Keras's and PyTorch's BatchNorm momentum) at one replicate, then the same
    command at two: the second run trains the second replicate only."""
    tmp = tmp_path_factory.mktemp("explain-gap")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    first = explain_gap(tmp, tracking_uri, "--replicates", "1")
    return tmp, tracking_uri, first, explain_gap(tmp, tracking_uri, "--replicates", "2")


def gap_table(stdout: str) -> tuple[dict[str, str], list[str]]:
    """The printed table as {setting: trials}, and the lines after it."""
    lines = stdout.splitlines()
    assert lines[0].startswith("setting") and set(lines[1]) <= {"-", " "}, stdout[:500]
    column = lines[0].index("trials")
    end = next(i for i, line in enumerate(lines) if line.startswith("Gap"))
    rows = {line[:column].strip(): line[column:].split()[0] for line in lines[2:end]}
    assert len(rows) == end - 2  # one row per setting, none repeated
    return rows, lines[end:]


def test_the_gap_table_has_one_row_per_setting(gap_runs):
    tmp, _, first, second = gap_runs
    document = json.loads(next((tmp / "reports").iterdir()).joinpath("analysis.json")
                          .read_text())
    for outcome, n in ((first, "1"), (second, "2")):
        assert outcome.returncode == 0, outcome.stderr[-3000:]
        rows, after = gap_table(outcome.stdout)
        assert rows == dict.fromkeys(document["gap"]["groups"], n) and len(rows) == 2
        assert after[0].startswith("Gap by setting: ") and after[-1].startswith("wrote ")
        # Found by a first user: it named analysis/ only, where the report went too.
        assert after[-1].endswith(", artifacts analysis/ and report/")
        groups = document["gap"]["groups"]
        open_ = [label for label, g in groups.items() if g["verdict"]["code"] == "inconclusive"]
        more = (f"more trials: the same command with --replicates {2 * int(n)} (intervals "
                f"narrow as 1/sqrt(n); inconclusive: {'; '.join(open_)}).")
        # The hint where a setting's verdict is inconclusive, naming those settings.
        assert after[1:-1] == ([more] if open_ else [])


@slow
def test_a_gap_study_resumed_with_another_width_or_question_is_refused_by_its_flags(gap_runs):
    tmp, tracking_uri, _, _ = gap_runs
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    name = summary.study_name
    wider = run_cli(["explain", "--storage", storage, *GAP, "--width-max", "4", "--study-name",
                     name], cwd=tmp, env=cli_env(tracking_uri), timeout=300)
    size = run_cli(["explain", "--storage", storage, "--width-min", "2", "--width-max", "32",
                    "--study-name", name, "--device", "cpu"],
                   cwd=tmp, env=cli_env(tracking_uri), timeout=300)

    assert (wider.returncode, size.returncode) == (1, 1)
    assert wider.stderr.strip() == (
        f"error: `width_max` conflicts with study {name!r}: it was created with --width-max 2, "
        f"but got --width-max 4; pass --width-max 2 to resume it, or a new --study-name NAME.")
    assert size.stderr.strip() == (
        f"error: `question` conflicts with study {name!r}: it is a gap experiment, but got "
        f"question='size'; pass --question gap to resume it, or a new --study-name NAME.")
    (after,) = optuna.get_all_study_summaries(storage)
    assert after.n_trials == summary.n_trials


def test_running_it_again_with_more_replicates_trains_only_the_new_ones(gap_runs):
    tmp, _, _, second = gap_runs
    assert "2/4 finished; running trials" in second.stderr
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp / 'optuna.db'}")
    assert summary.study_name.startswith("explain-gap-adam-lr0.001-")
    study = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{tmp / 'optuna.db'}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.user_attrs["explain_cell"] for t in trials) == [
        "adam-bn0.01-do0-r0", "adam-bn0.01-do0-r1", "adam-bn0.1-do0-r0", "adam-bn0.1-do0-r1"]


def test_the_size_question_is_tagged_not_asked_in_a_study_of_one_width(gap_runs):
    """Scripts read the tags: one width cannot ask the size question, which is not the same as
    an open one ("inconclusive": run more)."""
    _, tracking_uri, _, _ = gap_runs
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("study").experiment_id],
                                   "tags.`study.role` = 'parent'")
    tags = parent.data.tags
    assert tags["study.verdict.init"] == tags["study.verdict.early"] == "not-asked"
    assert tags["mlflow.note.content"].splitlines()[1].startswith("Model size: not asked. ")


def test_the_settings_of_a_replicate_start_from_the_same_weights(gap_runs):
    _, tracking_uri, _, _ = gap_runs
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("study").experiment_id],
                              "tags.`study.role` = 'trial'")
    by_seed: dict[str, list] = {}
    for run in runs:
        by_seed.setdefault(run.data.params["train_seed"], []).append(run)
    assert len(by_seed) == 2
    for pair in by_seed.values():
        assert sorted(r.data.params["bn_momentum"] for r in pair) == ["0.01", "0.1"]
        assert len({r.data.metrics["init/weight_sq_norm"] for r in pair}) == 1


def test_every_trial_logs_the_gap_parts_at_every_epoch(gap_runs):
    _, tracking_uri, _, _ = gap_runs
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("study").experiment_id],
                              "tags.`study.role` = 'trial'")
    assert len(runs) == 4
    for run in runs:
        for key in ("gap/timing", "gap/mode", "gap/generalization"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2]


GAP_BAD_INPUT = {
    "question": (["--question", "why"],
                 "`question` must be one of size, gap, but got question='why'."),
    "penalty_mode": (["--question", "gap", "--penalty-mode", "l2-in-loss,none"],
                     "`penalty_mode` must be a single mode for `study explain`"),
    "range": (["--question", "gap", "--dropout", "0:0.5"],
              "`dropout` must be values for `study explain --question gap`"),
    "momentum_without_sgd": (["--question", "gap", "--momentum", "0.5,0.9"],
                             "`momentum` must be a single value when sgd is not among"),
    "too_many": (["--question", "gap", "--optimizer", "adam,sgd", "--momentum", "0.5,0.9",
                  "--bn-momentum", "keras,pytorch", "--dropout", "0,0.5", "--replicates", "5"],
                 "must have at most 48 trials (settings x replicates), but got 12 settings x "
                 "5 replicates = 60 trials"),
    "width_min": (["--question", "gap", "--width-min", "8"],
                  "`width_min` must be width_max=32 for `study explain --question gap`"),
    "compare_widths": (["--question", "gap", "--compare-widths", "4,32"],
                       "`compare_widths` must be unset for `study explain --question gap`"),
    "sgd_decoupled": (["--question", "gap", "--optimizer", "adam,sgd", "--penalty-mode",
                       "decoupled"], "with optimizer='sgd'"),
    "size_lists": (["--optimizer", "adam,sgd"],
                   "`optimizer` must be a single value for `study explain --question size`"),
}


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("case", GAP_BAD_INPUT)
def test_a_bad_gap_input_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, case):
    from study.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    flags, message = GAP_BAD_INPUT[case]
    assert cli_main(["explain", *flags]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and message in out.err, out.err
    assert list(tmp_path.iterdir()) == []  # neither optuna.db nor mlflow.db


@pytest.mark.usefixtures("clean_env")
def test_a_swallowed_interrupt_stops_explain_before_its_first_trial(tmp_path, monkeypatch,
                                                                    capsys):
    import signal

    from study import cli as cli_module

    class Latched(cli_module.Interrupts):
        """A Ctrl-C that a finalizer swallowed while the stores opened: only the latch holds
        it."""

        def install(self) -> None:
            self.signum = signal.SIGINT

    monkeypatch.setattr(cli_module, "Interrupts", Latched)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli_module.main(["explain", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                            *GAP, "--replicates", "1"]) == 130
    assert capsys.readouterr().err.splitlines()[-1].startswith("interrupted")
    (study,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = optuna.load_study(study_name=study.study_name,
                               storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert trials and {t.state for t in trials} == {optuna.trial.TrialState.WAITING}


@pytest.mark.parametrize(("used", "per", "replicates", "wanted"), [
    (6, 6, 1, "--replicates 2 runs 12"),  # 3 widths and their controls, one replicate
    (7, 6, 1, "--replicates 2 runs 12"),
    (3, 6, 1, "--replicates 2 runs 12"),  # failed trials: the shortfall, not the design
    (4, 4, 1, "--replicates 2 runs 8"),   # penalty mode none: no controls
    (2, 4, 1, "--replicates 3 runs 12"),
])
def test_a_design_too_small_for_a_verdict_names_the_replicates_that_fill_it(used, per,
                                                                             replicates, wanted):
    from study.explain import _more_replicates

    (line,) = _more_replicates({"n_trials_used": used}, per_replicate=per,
                               replicates=replicates)
    assert line == (f"more trials: the same command with {wanted} (a verdict needs 8 usable "
                    f"trials).")


def test_a_design_big_enough_for_a_verdict_gets_no_advice():
    from study.explain import _more_replicates

    assert _more_replicates({"n_trials_used": 8}, per_replicate=6, replicates=1) == []
    decided = {"n_trials_used": 8, "init": {"verdict": {"code": "penalty"}}}
    assert _more_replicates(decided, per_replicate=6, replicates=1) == []


def test_an_inconclusive_verdict_names_the_replicates_for_the_trials_it_asks():
    # Found by a first user: "about 17 more trials (25 in total) would decide" with no flag.
    from study.explain import _more_replicates

    # The shape of analysis.json: the early window's verdict at the top, init's in its block.
    document = {"n_trials_used": 8, "init": {"verdict": {"code": "inconclusive",
                                                         "trials_needed": 25}},
                "verdict": {"code": "inconclusive", "trials_needed": 40}}
    assert _more_replicates(document, per_replicate=8, replicates=1) == [
        "more trials: the same command with --replicates 4 runs 32 (about 25 would decide, if "
        "the estimate holds)."]


@pytest.mark.parametrize(("code", "lines"), [
    ("inconclusive", ["more trials: the same command with --replicates 4 (intervals narrow as "
                      "1/sqrt(n))."]),
    ("epoch-averaging", []),
])
def test_an_inconclusive_gap_design_names_the_replicates_to_add(code, lines):
    from study.explain import _more_gap_replicates

    assert _more_gap_replicates({"gap": {"verdict": {"code": code}}}, 2) == lines


def test_settings_with_verdicts_ask_for_no_more_trials_whatever_the_pooled_verdict():
    """Found by a first user: two settings with verdicts were told to run more trials (the
    pooled verdict, which answers neither, was inconclusive)."""
    from study.explain import _more_gap_replicates

    def block(*codes):
        return {"gap": {"verdict": {"code": "inconclusive"},
                        "groups": {f"s{i}": {"verdict": {"code": c}}
                                   for i, c in enumerate(codes)}}}

    assert _more_gap_replicates(block("normalization-statistics", "epoch-averaging"), 2) == []
    assert _more_gap_replicates(block("none", "inconclusive", "inconclusive"), 3) == [
        "more trials: the same command with --replicates 6 (intervals narrow as 1/sqrt(n); "
        "inconclusive: s1; s2)."]


def test_under_mlflow_run_the_advice_names_the_mlproject_parameter(monkeypatch):
    # Found by a user: `mlflow run ... -e explain` was told to add --replicates.
    from study.explain import _more_replicates

    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    (line,) = _more_replicates({"n_trials_used": 6}, per_replicate=6, replicates=1)
    assert line.startswith("more trials: the same command with -P replicates=2 runs 12")
