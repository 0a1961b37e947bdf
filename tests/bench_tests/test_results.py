"""bench/RESULTS.md is rendered from the results JSON alone: a small hand-made document (no
measuring) puts its numbers in the right rows, labels the predictions and the devices not
measured, and survives the JSON round trip and ``bench/run.py --render``."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from bench import results, sections
from bench.harness import TARGETS
from bench.run import main as bench_main

FIGURES = [
    "overhead_service_seconds", "overhead_trainer_seconds", "overhead_bare_seconds",
    "trainer_ratio", "bare_vs_trainer_val_loss_max_abs_diff", "per_trial_overhead_seconds",
    "per_epoch_overhead_seconds",
    "session_fixed_seconds", "fixed_ms_per_trial", "analysis_table_seconds_10k",
    "analysis_table_seconds_10k_optuna_orm", "report_seconds_10k", "analysis_seconds_10k",
    "pruning_epochs_pruned", "pruning_epochs_unpruned", "pruning_seconds_pruned",
    "pruning_seconds_unpruned", "pruning_replay_epoch_saving", "pruning_replay_best_ratio",
    "pruning_epoch1_final_rank_corr", "pruning_epoch_saving", "pruning_best_ratio",
    "data_path_tensor_samples_per_s", "data_path_loader_samples_per_s", "data_path_ratio",
    "bench_seconds", "overhead_ratio",
]


def _pruner(epochs: int, seconds: float, best: float, **extra: float) -> dict[str, Any]:
    return {"epochs": epochs, "seconds": seconds, "n_pruned": 3, "n_failed": 0, "best": best,
            **extra}


def quick_doc() -> dict[str, Any]:
    """A --quick run's document, by hand (no journal storage, no profile, no stage timings)."""
    trial = {"training: Trainer.fit (steps + validation)": 0.9,
             "MLflow: create trial run": 0.012, "Optuna: storage reads/writes": 0.06}
    return {
        "schema": results.SCHEMA,
        "run": {"plan": {"name": "quick"}, "command": "python bench/run.py --quick",
                "date": "2030-01-02 03:04 UTC", "bench_seconds": 123.4,
                "load_start": [0.5, 0.6, 0.7], "load_end": None, "template_seconds": 2.5},
        "machine": {"cpu": "test cpu", "device": "cpu"},
        "setup": {"lr": 0.003, "batch_size": 64, "weight_decay": 0.0001, "epochs": 3,
                  "penalty_mode": "l2-in-loss", "seed": 0, "study_n_trials": 20},
        "targets": {k: list(v) for k, v in TARGETS.items()},
        "overhead": {
            "widths": [8, 16], "epochs": 3, "dataset": "digits", "n_train": 1437, "n_val": 360,
            "times": {k: [v, v + 0.01, v + 0.02] for k, v in
                      (("service", 1.3), ("instrumented", 1.31), ("trainer", 1.0),
                       ("bare", 0.99))},
            "median": {"service": 1.31, "instrumented": 1.32, "trainer": 1.01, "bare": 1.0},
            "ratio": 1.3072, "trainer_ratio": 1.01, "pair_ratio_median": 1.309,
            "val_loss_max_abs_diff": 7e-9,
            "decomposition": {
                "wall": 1.32, "n_trials": 3, "n_runs": 2, "epochs": 3, "trial": trial,
                "trial_calls": {k: 3.0 for k in trial},
                "session": {"MLflow: client, parent run, summary": 0.05},
                "background": {}, "training_per_trial": 0.3, "per_trial_overhead": 0.024,
                "per_epoch": 0.006, "per_trial_fixed": 0.006, "session_fixed": 0.05,
                "bare_per_trial": 0.33},
        },
        "analysis": {
            "primary": "sqlite", "n": 10000, "generate_seconds": 0.2,
            "states": {"COMPLETE": 6200, "PRUNED": 3300, "FAIL": 500},
            "evaluators": ["fanova", "ped-anova"], "n_bootstrap": 30,
            "importance_max_trials": 400,
            "sqlite": {"rows": 175000, "build_seconds": 1.4,
                       "times": {"table": [1.0, 1.1], "analysis": [1.05, 1.07],
                                 "table_orm": [4.6, 4.7], "report": [5.27]},
                       "median": {"table": 1.05, "analysis": 1.06, "table_orm": 4.65,
                                  "report": 5.27}},
        },
        "pruning": {
            "pruners": ["median", "none"], "n_trials": 12, "cap": 0.39,
            "study": {"n_trials": 12, "epochs": 3, "early_epochs": 1, "n_startup_trials": 5,
                      "sampler": "tpe", "width": [4, 32], "lr": [1e-4, 1e-2],
                      "batch_sizes": [32, 64, 128], "weight_decay": [1e-5, 1e-2]},
            "per_seed": [{"seed": 0,
                          "median": _pruner(28, 4.0, 0.2, saving=0.222, best_ratio=1.0,
                                            time_ratio=0.8),
                          "none": _pruner(36, 5.0, 0.2),
                          "replay": {"epochs": 30, "best": None, "rank_corr": 0.9,
                                     "saving": 0.167, "best_ratio": None}}],
            "summary": {"median": {"saving": 0.222, "best_ratio": 1.0, "time_ratio": 0.8},
                        "replay": {"saving": 0.167, "best_ratio": None, "rank_corr": 0.9}},
        },
        "data_path": {"rates": {"tensors": [16000.0, 17000.0, 18000.0],
                                "dataloader": [15000.0, 16000.0, 17000.0]},
                      "median": {"tensors": 17000.0, "dataloader": 16000.0}, "ratio": 1.0625,
                      "pair_ratio_median": 1.06, "device": "cpu", "pinned": False, "width": 16,
                      "batch_size": 64, "epochs": 4},
        "profile": None,
    }


def row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{markdown}")


def test_numbers_land_in_their_rows_and_predictions_are_labelled() -> None:
    doc = quick_doc()
    md = results.render(doc, "results.json")

    assert row(md, "`overhead_ratio`")[1:4] == ["1.307", "<= 1.03", "**no**"]
    assert row(md, "`analysis_seconds_10k`")[1:4] == ["1.06 s", "<= 2 s", "yes"]
    assert row(md, "`data_path_ratio`")[1] == "1.06"
    assert row(md, "service")[1].startswith("1.310 s (min 1.300, max 1.320, n=3)")
    assert row(md, "this run")[4:] == ["1.3072", "measured"]
    # T = 5 s, 3 epochs, N = 20: (5 + 0.006 + 3 * 0.006 + 0.05 / 20) / 5
    assert row(md, "T = 5 s")[4:] == [f"{(5 + 0.0265) / 5:.4f}", sections.PREDICTION]
    assert row(md, "shortest trial with a ratio <= 1.03")[5] == sections.PREDICTION
    # This run was on the CPU: every GPU row reads "not measured".
    assert row(md, "cuda (GPU)")[1:] == [sections.NOT_MEASURED, sections.NOT_MEASURED]
    assert row(md, "any trial on cuda (GPU)")[4] == sections.NOT_MEASURED
    assert row(md, "cuda (GPU)")[2] == sections.NOT_MEASURED
    assert "**prediction (not measured)**" in md
    assert "Not run (quick run)." in md
    assert "$" not in md  # every placeholder filled


def test_each_store_call_lands_in_its_row_with_its_saving() -> None:
    doc = quick_doc()
    assert "## 1a. Each store call\n\nNot measured in this run." in results.render(doc)
    doc["store_calls"] = {"calls": 15, "rows": {
        "MLflow: create a trial run": {"reference": 0.0031, "service": 0.0004},
        "Optuna: read a running trial (get_trial)": {"reference": 0.0012, "service": 0.0004}}}
    md = results.render(doc)
    assert row(md, "MLflow: create a trial run")[1:] == ["3.10", "0.40", "2.70", "7.8x"]
    assert row(md, "Optuna: read a running trial (get_trial)")[1:] == [
        "1.20", "0.40", "0.80", "3.0x"]
    assert "15 calls each" in md and "$" not in md


def _peer_setting(epochs: int, service: float, docs: float) -> dict[str, Any]:
    names = ("service", "mlflowcb", "docs", "docs_async")
    return {"epochs": epochs, "repeats": 2, "bare_per_trial": 0.1 * epochs,
            "ratio": dict(zip(names, (service, 1.02, docs, 1.04), strict=True)),
            "logged": {n: {"metric_rows": rows} for n, rows in zip(names, (634, 3, 121, 121),
                                                                  strict=True)},
            "costs": {n: {"per_trial_fixed": fixed, "per_epoch": epoch, "session_fixed": 0.05}
                      for n, fixed, epoch in (("mlflowcb", 0.0607, 0.0), ("docs", 0.0331, 0.0102),
                                              ("docs_async", 0.0395, 0.0013))}}


def test_the_peers_land_in_their_section_and_the_summary() -> None:
    doc = quick_doc()
    md = results.render(doc)
    assert "## 1d. Against peers\n\nNot measured in this run." in md
    assert "peer_" not in md
    doc["peers"] = {"peers": ["mlflowcb", "docs", "docs_async"], "dataset": "digits",
                    "seconds": 465.0, "settings": {"short": _peer_setting(3, 1.59, 1.26),
                                                   "long": _peer_setting(20, 1.10, 1.11)}}
    md = results.render(doc)
    # The target is read at the long setting (about 2 s per trial): met there.
    assert row(md, "`peer_service_ratio_long`")[1:4] == ["1.100", "<= docs recipe (1.110)", "yes"]
    peers = md[md.index("## 1d."):]
    assert row(peers, "MLflow docs recipe")[1:5] == ["1.260", "33.1", "10.20", "121"]
    assert row(peers, "service")[1:5] == ["1.590", "6.0 (section 1)", "6.00 (section 1)", "634"]
    assert "service's ratio is above the docs recipe's" in md  # the short setting
    assert "service's ratio is no worse than the docs recipe's" in md  # the long one
    names = [p.split("=")[0] for p in results.pair_lines(doc)]
    assert names[:len(FIGURES) - 2] == FIGURES[:-2]  # the peers come before the closing two
    assert names[-2:] == FIGURES[-2:]
    assert "peer_docs_ratio_long" in names and "$" not in md


def test_a_busy_machine_is_flagged() -> None:
    doc = quick_doc()
    assert "machine was busy" not in results.render(doc)
    doc["machine"]["cores"] = "2"
    doc["run"]["load_end"] = [5.16, 5.35, 4.6]
    assert "load average 0.50 at the start, 5.16 at the end, on 2 cores" in results.render(doc)


def test_prose_states_no_number_of_its_own() -> None:
    """Measured numbers reach the output only through the JSON: change one, and it changes."""
    doc = quick_doc()
    other = copy.deepcopy(doc)
    other["analysis"]["sqlite"]["median"]["table_orm"] = 9.87
    assert "9.87" not in results.render(doc) and "9.87" in results.render(other)


def test_figures_keep_their_names_and_order() -> None:
    pairs = results.pair_lines(quick_doc())
    assert [p.split("=")[0] for p in pairs] == FIGURES
    assert pairs[-1] == "overhead_ratio=1.3072"
    assert "pruning_replay_best_ratio=nan" in pairs  # null in the JSON


def test_render_from_the_json_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = quick_doc()
    json_path, md_path = tmp_path / "results.json", tmp_path / "RESULTS.md"
    results.save(doc, json_path)
    assert bench_main(["--render", str(json_path), "--out", str(md_path)]) == 0
    text = md_path.read_text()
    assert text == results.render(results.load(json_path), str(json_path))
    assert re.search(r"^overhead_ratio=1\.3072$", text, flags=re.MULTILINE)
    assert "wrote" in capsys.readouterr().out
