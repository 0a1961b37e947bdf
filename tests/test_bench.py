"""The benchmark harness runs end to end: ``python bench/run.py --smoke`` (every measurement
once, at the smallest size: ``bench.harness.SMOKE``) exits 0 and ends with its figures as
``name=value`` lines, the peers' (``peer_<name>_...``, bench/peers.py) among them, each with the
metric rows its peer logs by construction.

Nothing here asserts a duration or a target (the machine may be shared, and the smoke run's
numbers mean nothing; bench/RESULTS.md holds the measured figures). The figures are printed
(``pytest -s``) and, when ``STUDY_ARTIFACTS`` is set (CI), kept in
``$STUDY_ARTIFACTS/bench_smoke.txt``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import SMOKE
from bench.peers import PEERS, SETTINGS

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("overhead_ratio", "fixed_ms_per_trial", "floor_fixed_ms_per_trial",
           "floor_with_close_ms_per_trial", "fixed_over_floor", "overhead_ratio_default",
           "analysis_seconds_10k", "report_seconds_10k", "pruning_epoch_saving",
           "pruning_best_ratio", "data_path_ratio")
PLAN = SMOKE  # the plan --smoke runs
TRIALS, EPOCHS = len(PLAN.widths), SETTINGS["short"]  # the peers' short setting
# --smoke takes about 1.5 minutes on 2 idle CPU cores; a busy machine can be several times slower.
TIMEOUT = 900


def trailing_pairs(stdout: str) -> dict[str, str]:
    """The ``name=value`` lines at the end of ``stdout``, in order."""
    pairs: list[tuple[str, str]] = []
    for line in reversed(stdout.strip().splitlines()):
        name, sep, value = line.strip().partition("=")
        if not sep or not name.isidentifier():
            break
        pairs.append((name, value))
    return dict(reversed(pairs))


@pytest.mark.slow
def test_smoke_benchmark_ends_with_finite_positive_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "STUDY_"))}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), f"--{PLAN.name}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    pairs = trailing_pairs(proc.stdout)
    report = "\n".join(f"{name}={value}" for name, value in pairs.items())
    print(f"\nbench/run.py --{PLAN.name} (exit {proc.returncode}):\n{report}")
    artifacts = os.environ.get("STUDY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / f"bench_{PLAN.name}.txt").write_text(
            f"# python bench/run.py --{PLAN.name}, exit {proc.returncode}\n{proc.stdout}"
            + (f"\n# stderr (tail)\n{proc.stderr[-4000:]}" if proc.returncode else ""))

    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (tmp_path / "mlruns").exists()  # artifacts stay in the harness's temp folder
    missing = [name for name in FIGURES if name not in pairs]
    assert not missing, f"missing figures {missing} in:\n{proc.stdout[-3000:]}"
    values = {name: float(value) for name, value in pairs.items()}
    assert all(math.isfinite(v) for v in values.values()), values
    assert all(values[name] > 0 for name in FIGURES), values
    # The bare loop is the same training as the Trainer (same model, seed, batches, optimizer):
    # if it were not, every overhead ratio would compare different work.
    assert values["bare_vs_trainer_val_loss_max_abs_diff"] < 1e-4, values
    # The smoke run also takes the full run's own paths: the journal storage and Hyperband.
    assert {"analysis_seconds_10k_journal", "pruning_hyperband_epoch_saving"} <= set(values)
    _check_peer_lines(values)


def _check_peer_lines(values: dict[str, float]) -> None:
    """The peers' lines (bench/peers.py) at the short setting: positive costs and ratios, and
    the metric rows each one logs by construction."""
    names = ["peer_bare_seconds_per_trial", "peer_service_ratio", "peer_service_metric_rows"]
    for peer in PEERS:
        names += [f"peer_{peer}_{figure}" for figure in
                  ("fixed_ms_per_trial", "epoch_ms", "ratio", "metric_rows")]
    missing = [name for name in names if name not in values]
    assert not missing, f"missing peer figures {missing}"
    assert all(values[name] > 0 for name in names if not name.endswith("epoch_ms")), values
    assert values["peer_mlflowcb_epoch_ms"] == 0  # nothing logged per epoch
    rows = 2 * EPOCHS * TRIALS + 1  # train and val loss per epoch, the best value
    assert values["peer_mlflowcb_metric_rows"] == TRIALS, values  # the final value
    assert values["peer_docs_metric_rows"] == rows, values
    assert values["peer_docs_async_metric_rows"] == rows, values
    # The service logs the decomposition of every epoch: more than the docs recipe.
    assert values["peer_service_metric_rows"] > rows, values
