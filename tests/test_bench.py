"""The benchmark harness runs end to end: ``python bench/run.py --quick`` exits 0 and ends with
its figures as ``name=value`` lines.

Nothing here asserts a duration or a target (the machine may be shared; bench/RESULTS.md holds
the measured figures). The figures are printed (``pytest -s``) and, when ``STUDY_ARTIFACTS`` is
set (CI), kept in ``$STUDY_ARTIFACTS/bench_quick.txt``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("overhead_ratio", "fixed_ms_per_trial", "overhead_ratio_default",
           "analysis_seconds_10k", "report_seconds_10k", "pruning_epoch_saving",
           "pruning_best_ratio", "data_path_ratio")
# --quick takes about 2-3 minutes on 2 idle CPU cores; a busy machine can be several times slower.
TIMEOUT = 1800


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
def test_quick_benchmark_ends_with_finite_positive_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "STUDY_"))}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    pairs = trailing_pairs(proc.stdout)
    report = "\n".join(f"{name}={value}" for name, value in pairs.items())
    print(f"\nbench/run.py --quick (exit {proc.returncode}):\n{report}")
    artifacts = os.environ.get("STUDY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "bench_quick.txt").write_text(
            f"# python bench/run.py --quick, exit {proc.returncode}\n{proc.stdout}"
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
