"""Benchmark harness: what the service costs on top of bare training, and how fast its pieces are.

Usage::

    python bench/run.py [--quick | --smoke] [--device auto|cpu|cuda] [--out bench/RESULTS.md]
                        [--json bench/results.json] [--threads N]
    python bench/run.py --render [bench/results.json] [--out bench/RESULTS.md]

Every figure is measured in this one run against a baseline measured in the same run: repeats are
interleaved (A B, then B A, ...) so slow drifts and other processes on the machine hit both sides
alike, and medians are reported. Process start-up, imports, dataset loading and store creation are
outside every timed region. The last lines of stdout are ``name=value`` pairs (finite numbers).

Figures:

- ``overhead_ratio``: a fixed set of trials (widths 8, 16, 32; 3 epochs; digits; fixed lr, batch
  size and weight decay; no pruning) run through ``run_session`` (Optuna SQLite storage + MLflow
  SQLite tracking, both fresh; the trials are enqueued) over the same configurations trained by
  the hand-written loop ``bench.overhead.bare_fit`` (no Optuna, no MLflow).
- ``analysis_seconds_10k`` / ``report_seconds_10k``: ``study analyze`` / ``study report``
  (``analyze_study`` / ``report_study``) on 10,000 synthetic trials in an SQLite storage (the
  default), beside Optuna's own ORM reader of the same trials; the full run also reads them from
  a journal storage.
- ``pruning_epoch_saving`` / ``pruning_best_ratio``: the default (median) pruner against
  ``pruner="none"``, same seed and sampler, medians over seeds.
- ``data_path_ratio``: training samples/s of device-resident tensors over a ``DataLoader``.
- ``fixed_ms_per_trial``: the service's cost per trial outside training and the per-epoch
  callbacks (from the decomposition of ``overhead_ratio``).
- ``floor_fixed_ms_per_trial`` / ``floor_with_close_ms_per_trial`` / ``fixed_over_floor``: an
  estimate of the least a trial's path can cost the stores on this machine while keeping the
  SPEC's contract through supported APIs (``bench/floor.py``, interleaved with
  ``overhead_ratio``'s variants), the same with the run's close made synchronously, and
  ``fixed_ms_per_trial`` over the first: the fixed cost as a ratio against a floor of the same
  run.
- ``peer_<name>_ratio`` / ``peer_<name>_fixed_ms_per_trial`` / ``peer_<name>_metric_rows``:
  what a user would write instead (``mlflowcb``: Optuna + optuna-integration's
  ``MLflowCallback``; ``docs``: the MLflow docs' nested-runs recipe; ``docs_async``: that recipe
  with asynchronous logging), over the bare loop on the same trials, interleaved with the bare
  loop and the service (``peer_service_ratio``) in one group (``bench/peers.py``); the full run
  repeats them at about ten times the training per trial (names ending in ``_long``).
- ``overhead_ratio_default``: a default study (TPE over four dimensions, the median pruner)
  over the bare loop replaying exactly the trials it trained (``bench/default_study.py``).
- ``gpu_*`` (``--device cuda`` only): the training loop against a bare loop, AMP,
  ``channels_last`` and ``torch.compile`` speedups, and trials per hour at 1, 2, 4 and 8
  concurrent trials on one GPU (``bench/gpu.py``).

Every mode decomposes the service's cost (exclusive wall time of every MLflow, Optuna-storage,
sampler and pruner call, in an instrumented variant interleaved with the others). The full run
also profiles one trial (torch.profiler and cProfile) and times the stages of ``study analyze``
and ``study report``. Every measurement goes to one JSON file (``bench/results.json`` for the full
run); ``bench/RESULTS.md`` is rendered from that JSON alone (``bench/results.py``), and
``--render`` renders it again without measuring. ``--smoke`` runs every measurement once, at the
smallest size (``bench.harness.SMOKE``; the full run's journal storage, Hyperband and profile
included, the long peer setting, the same code as the short one, left out): it checks that the
benchmark runs end to end (``tests/test_bench.py``); its numbers mean nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` and `study` from the checkout
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse
import dataclasses
import datetime as dt
import math
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

from bench import results
from bench.harness import (
    FULL,
    QUICK,
    REPO,
    SMOKE,
    TARGETS,
    Plan,
    Workspace,
    load_average,
    log,
    machine_info,
    trial_setup,
)
from bench.sections import spread


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="Fewer repeats and configurations (< 5 min on 2 CPU cores); "
                           "writes no results files unless --out or --json is given.")
    mode.add_argument("--smoke", action="store_true",
                      help="Every measurement once, at the smallest size: checks that the "
                           "benchmark runs; its numbers mean nothing. Like --quick, writes no "
                           "results files unless --out or --json is given.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when present, else CPU.")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"Markdown results (default: "
                             f"{results.DEFAULT_MD.relative_to(REPO)} for the full run and "
                             f"--render, none for --quick and --smoke).")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"JSON results (default: "
                             f"{results.DEFAULT_JSON.relative_to(REPO)} for the full run; "
                             f"with --out, beside it).")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice, as the "
                             "service runs); 1 is steadier on a machine shared with others.")
    parser.add_argument("--render", nargs="?", type=Path, const=results.DEFAULT_JSON,
                        default=None, metavar="JSON",
                        help="Measure nothing: render the Markdown from this JSON (default "
                             f"{results.DEFAULT_JSON.relative_to(REPO)}).")
    return parser


def _outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Where the Markdown and the JSON go (``None``: not written)."""
    partial = args.quick or args.smoke  # never overwrite the full run's results by default
    md = args.out.resolve() if args.out else (None if partial else results.DEFAULT_MD)
    if args.json:
        return md, args.json.resolve()
    if md is not None and args.out:
        return md, (md.with_name("results.json") if md.name == "RESULTS.md"
                    else md.with_suffix(".json"))
    return md, None if partial else results.DEFAULT_JSON


def measure(plan: Plan, device: Any, doc: dict[str, Any]) -> None:
    """Every benchmark of ``plan``, each into its own key of ``doc``."""
    from bench import coverage
    from bench.analysis10k import bench_analysis
    from bench.data_path import bench_data_path
    from bench.default_study import bench_default_study
    from bench.gap_cost import bench_gap_cost
    from bench.gpu import bench_gpu
    from bench.init_cost import bench_init_cost
    from bench.peers import bench_peers
    from bench.peers import log_lines as peer_lines
    from bench.profiling import bench_profile
    from bench.pruning import bench_pruning
    from bench.real_replicates import bench_real_replicates
    from bench.real_replicates import table_lines as replicate_lines
    from bench.store_calls import bench_store_calls
    from study.training.data import load_dataset

    ws = Workspace()
    cwd = Path.cwd()
    os.chdir(ws.root)  # MLflow puts artifacts under ./mlruns: keep them in the workspace
    try:
        doc["run"]["template_seconds"] = ws.template_seconds
        log(f"MLflow template database migrated in {ws.template_seconds:.1f} s (not timed)")
        data = load_dataset("digits", seed=0, device=device)
        _overhead_and_floor(ws, data, plan, device, doc)
        log("peers (MLflowCallback, the MLflow docs recipe, sync and async) on the same "
            "trials ...")
        doc["peers"] = bench_peers(ws, data, plan, device)
        for line in peer_lines(doc["peers"]):
            log(f"  {line}")
        log("each store call, through the stores' clients and as the service makes it ...")
        doc["store_calls"] = bench_store_calls(ws, plan)
        for name, row in doc["store_calls"]["rows"].items():
            log(f"  {name}: {row['reference'] * 1000:.2f} -> {row['service'] * 1000:.2f} ms")
        log("the default study (TPE, median pruner) against the bare loop replaying it ...")
        doc["default_study"] = bench_default_study(ws, data, plan, device)
        log(f"  overhead_ratio_default {doc['default_study']['ratio']:.3f}")
        doc["gpu"] = None
        if device.type == "cuda":
            log("GPU: loop, AMP, channels_last, compile, concurrent trials ...")
            doc["gpu"] = bench_gpu(ws, plan, device)
        log(f"analysis/report on {plan.synthetic_trials} synthetic trials ...")
        doc["analysis"] = bench_analysis(ws, plan)
        log(f"pruning: {plan.pruning_trials} trials, seeds {plan.pruning_seeds} ...")
        doc["pruning"] = bench_pruning(ws, plan, device)
        log("data path: device tensors vs DataLoader ...")
        doc["data_path"] = bench_data_path(data, plan, device)
        log(f"  {doc['data_path']['ratio']:.2f}x")
        log("the loss at initialization against one epoch ...")
        doc["init_cost"] = bench_init_cost(data, plan, device)
        log(f"  {doc['init_cost']['ratio']:.2f} of an epoch")
        log("the validation-gap measurement against one epoch ...")
        doc["gap_cost"] = bench_gap_cost(data, plan, device)
        log(f"  {doc['gap_cost']['ratio']:.2f} of an epoch")
        log(f"coverage: {plan.coverage_studies} simulated studies per scenario ...")
        doc["coverage"] = coverage.run(plan.coverage_studies)
        log("real replicate studies of one setting ...")
        doc["real_replicates"] = bench_real_replicates(ws, data, plan, device)
        for line in replicate_lines(doc["real_replicates"])[2:8]:
            log(f"  {line}")
        doc["profile"] = None
        if plan.profile:
            log("profile of one trial ...")
            doc["profile"] = bench_profile(ws, data, device)
    finally:
        os.chdir(cwd)
        ws.close()


def _overhead_and_floor(ws: Workspace, data: Any, plan: Plan, device: Any,
                        doc: dict[str, Any]) -> None:
    """``overhead_ratio`` with the service's cost decomposed, interleaved with the floor of a
    trial's store cost it is read against (``doc["overhead"]``, ``doc["floor"]``)."""
    from bench.floor import floor_result, floor_variants
    from bench.overhead import bench_overhead

    log(f"overhead and its floor: widths {plan.widths}, {plan.overhead_repeats} interleaved "
        "repeats ...")
    o = doc["overhead"] = bench_overhead(ws, data, plan, device,
                                         also=floor_variants(ws, plan.widths))
    log("  " + ", ".join(f"{k} {spread(v)}" for k, v in o["times"].items()))
    log(f"  overhead_ratio {o['ratio']:.3f} (trainer/bare {o['trainer_ratio']:.3f})")
    d = o["decomposition"]
    log(f"  {d['per_trial_overhead'] * 1000:.0f} ms per trial outside training, "
        f"{d['session_fixed'] * 1000:.0f} ms per session")
    f = doc["floor"] = floor_result(o["times"], len(plan.widths))
    log(f"  fixed cost {d['per_trial_fixed'] * 1000:.0f} ms per trial, "
        f"{d['per_trial_fixed'] / f['per_trial_median']:.2f}x the floor of "
        f"{f['per_trial_median'] * 1000:.0f} ms ({f['per_trial_median_with_close'] * 1000:.0f}"
        " ms with the runs' close)")


def run(args: argparse.Namespace, command: str) -> int:
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    md_path, json_path = _outputs(args)
    started = time.perf_counter()
    load_start = load_average()
    for name in [k for k in os.environ if k.startswith(("MLFLOW_", "STUDY_STORAGE"))]:
        del os.environ[name]  # run in our own stores, never in a caller's run

    import warnings

    import optuna

    from study.config import StudyConfig
    from study.errors import StudyError
    from study.training.trainer import resolve_device

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log(f"bench ({plan.name}) on {device}; {os.cpu_count()} cores; load {load_start}")
    doc: dict[str, Any] = {
        "schema": results.SCHEMA,
        "run": {"plan": dataclasses.asdict(plan), "command": command, "load_start": load_start},
        "setup": {**trial_setup(), "study_n_trials": StudyConfig().n_trials},
        "targets": TARGETS,
    }
    measure(plan, device, doc)
    doc["run"].update(
        bench_seconds=time.perf_counter() - started, load_end=load_average(),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    doc["machine"] = machine_info(device)
    pairs = results.figures(doc)
    if json_path is not None:
        results.save(doc, json_path)
        log(f"wrote {json_path}")
    if md_path is not None:
        results.write(results.load(json_path) if json_path else doc, md_path, json_path)
        log(f"wrote {md_path}")
    print("\n".join(f"{name}={value:.6g}" for name, value in pairs), flush=True)
    bad = [name for name, value in pairs if not math.isfinite(value)]
    if bad:
        print(f"error: non-finite figures: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render is not None:
        md_path = args.out.resolve() if args.out else results.DEFAULT_MD
        results.write(results.load(args.render), md_path, args.render)
        log(f"wrote {md_path}")
        return 0
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(
        ["python", "bench/run.py", *argv])
    return run(args, command)


if __name__ == "__main__":
    sys.exit(main())
