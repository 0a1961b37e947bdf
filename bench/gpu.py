"""GPU figures (``bench/run.py --device cuda``): how close the service's training loop stays to
a bare loop on the device, what AMP, ``channels_last`` and ``torch.compile`` gain, and how many
trials an hour one GPU runs as concurrent trials are added (``--trials-per-gpu``).

A GPU needs more work than digits: seeded 32x32 RGB images (``bench/images32.py``, 8,192
training samples) and a width-64 CNN (the middle of a 32-128 search). Every comparison is
interleaved after a warm-up, as in the rest of the benchmark. The same functions run on the CPU
(``--workers`` instead of ``--trials-per-gpu``) so CI exercises them; their figures are only
reported for a CUDA device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.harness import LR, REPO, WEIGHT_DECAY, Plan, Workspace, interleaved, median, sync
from bench.overhead import bare_fit

IMAGES = f"{REPO / 'bench' / 'images32.py'}:images32"
WIDTH = 64
BATCH = 128  # a GPU-sized batch; digits' 64 leaves a large GPU idle between kernel launches
EPOCHS = 2
CONCURRENCY = (1, 2, 4, 8)
N_TRIALS = 16  # per concurrency level: two rounds of trials at k = 8
REPEATS = {"smoke": 1, "quick": 3, "full": 7}  # interleaved repeats of the loop figures


def _fit(data: Any, device: Any, width: int, epochs: int, **trainer: Any) -> float:
    from study.training.trainer import HParams, Trainer

    start = time.perf_counter()
    Trainer(HParams(width, LR, BATCH, WEIGHT_DECAY), data, epochs=epochs, seed=0,
            **trainer).fit()
    sync(device)
    return time.perf_counter() - start


def _bare(data: Any, device: Any, width: int, epochs: int) -> float:
    start = time.perf_counter()
    bare_fit(data, width, epochs=epochs, batch_size=BATCH)
    sync(device)
    return time.perf_counter() - start


def loop_figures(data: Any, device: Any, repeats: int, *, width: int = WIDTH,
                 epochs: int = EPOCHS, compile: bool = True) -> dict[str, Any]:
    """Trainer vs bare loop, and the Trainer with AMP, channels_last or compile switched
    (``compile=False`` skips the compiled variant: its figures are then ``None``)."""
    times = interleaved({
        "trainer": lambda: _fit(data, device, width, epochs),
        "bare": lambda: _bare(data, device, width, epochs),
        "no_amp": lambda: _fit(data, device, width, epochs, amp=False),
        "no_channels_last": lambda: _fit(data, device, width, epochs, channels_last=False),
    }, repeats)
    med = {name: median(values) for name, values in times.items()}
    compiled = cold = None
    if compile:
        cold = _fit(data, device, width, epochs, compile=True)  # compiles, then trains
        compiled = median([_fit(data, device, width, epochs, compile=True)
                           for _ in range(max(repeats, 2))])
    samples = data.n_train * epochs
    return {
        "times": times, "median": med, "samples": samples,
        "trainer_samples_per_s": samples / med["trainer"],
        "bare_samples_per_s": samples / med["bare"],
        "trainer_vs_bare": med["bare"] / med["trainer"],
        "amp_speedup": med["no_amp"] / med["trainer"],
        "channels_last_speedup": med["no_channels_last"] / med["trainer"],
        "compile_speedup": None if compiled is None else med["trainer"] / compiled,
        "compile_seconds": None if compiled is None else max(cold - compiled, 0.0),
    }


def trial_memory_mb(data: Any, device: Any) -> float | None:
    """Peak memory one trial's tensors take on the GPU (each worker process adds its CUDA
    context on top); ``None`` off CUDA."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    _fit(data, device, WIDTH, EPOCHS)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def trials_per_hour(ws: Workspace, device: Any, k: int, *, n_trials: int = N_TRIALS,
                    dataset: str = IMAGES, width: int = WIDTH, epochs: int = EPOCHS) -> dict:
    """``study run`` with ``k`` concurrent trials (``--trials-per-gpu k`` on CUDA, ``--workers
    k`` elsewhere) on a journal storage; the rate counts from the first trial's start to the
    last trial's end (the workers' start-up is reported apart)."""
    import optuna

    folder, _, tracking = ws.fresh(f"gpu-k{k}")
    storage = f"journal:{folder / 'optuna.log'}"
    parallel = (["--trials-per-gpu", str(k), "--device", "cuda"] if device.type == "cuda"
                else ["--workers", str(k), "--device", "cpu"])
    command = [sys.executable, "-m", "study", "run", "--storage", storage, "--study-name", "gpu",
               "--dataset", dataset, "--width-min", str(width), "--width-max", str(width),
               "--batch-sizes", str(BATCH), "--epochs", str(epochs), "--early-epochs", "1",
               "--pruner", "none", "--n-trials", str(n_trials), "--quiet", *parallel]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"study run with k={k} failed: {proc.stderr[-2000:]}")
    from study.storages import create_storage

    trials = [t for t in optuna.load_study(study_name="gpu", storage=create_storage(storage))
              .get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in trials)
            - min(t.datetime_start for t in trials)).total_seconds()
    return {"k": k, "n_trials": len(trials), "wall": wall, "span": span,
            "per_hour": len(trials) / span * 3600, "startup": wall - span}


def bench_gpu(ws: Workspace, plan: Plan, device: Any, *,
              concurrency: Sequence[int] = CONCURRENCY) -> dict[str, Any]:
    """Every GPU figure on ``device``; the smoke run trains one round of ``k`` trials per
    concurrency level (it checks that each level runs)."""
    from study.training.data import load_dataset

    data = load_dataset(IMAGES, seed=0, device=device)
    repeats = REPEATS.get(plan.name, REPEATS["full"])
    return {
        "dataset": "images32 (bench/images32.py)", "n_train": int(data.n_train),
        "width": WIDTH, "batch_size": BATCH, "epochs": EPOCHS,
        "loop": loop_figures(data, device, repeats),
        "memory_mb": trial_memory_mb(data, device),
        "concurrency": [trials_per_hour(ws, device, k,
                                        n_trials=k if plan.name == "smoke" else N_TRIALS)
                        for k in concurrency],
    }


def figures(g: dict[str, Any]) -> list[tuple[str, float]]:
    """The ``name=value`` figures of the GPU section."""
    loop = g["loop"]
    pairs = [("gpu_trainer_vs_bare", loop["trainer_vs_bare"]),
             ("gpu_amp_speedup", loop["amp_speedup"]),
             ("gpu_channels_last_speedup", loop["channels_last_speedup"])]
    if loop["compile_speedup"] is not None:
        pairs += [("gpu_compile_speedup", loop["compile_speedup"]),
                  ("gpu_compile_seconds", loop["compile_seconds"])]
    if g.get("memory_mb") is not None:
        pairs.append(("gpu_memory_per_trial_mb", g["memory_mb"]))
    pairs += [(f"gpu_trials_per_hour_{row['k']}", row["per_hour"]) for row in g["concurrency"]]
    return pairs


def section(doc: dict[str, Any]) -> dict[str, str]:
    """The fields of the template's ``gpu`` section."""
    from bench.sections import table

    g = doc["gpu"]
    loop = g["loop"]
    rows = [[name, f"{loop['median'][key]:.3f} s", f"{loop['samples'] / loop['median'][key]:.0f}"]
            for name, key in (("service Trainer (AMP, channels_last)", "trainer"),
                              ("bare loop", "bare"), ("Trainer without AMP", "no_amp"),
                              ("Trainer without channels_last", "no_channels_last"))]
    k_rows = [[str(r["k"]), str(r["n_trials"]), f"{r['span']:.1f} s", f"{r['per_hour']:.0f}",
               f"{r['startup']:.1f} s"] for r in g["concurrency"]]
    memory = g.get("memory_mb")
    return {
        "gpu_name": doc["machine"]["gpu"], "gpu_dataset": g["dataset"],
        "gpu_n_train": str(g["n_train"]), "gpu_width": str(g["width"]),
        "gpu_batch": str(g["batch_size"]), "gpu_epochs": str(g["epochs"]),
        "gpu_loop_table": table(["variant", "median time", "samples/s"], rows),
        "gpu_trainer_vs_bare": f"{loop['trainer_vs_bare']:.3f}",
        "gpu_amp": f"{loop['amp_speedup']:.2f}",
        "gpu_channels_last": f"{loop['channels_last_speedup']:.2f}",
        "gpu_compile": ("not measured" if loop["compile_speedup"] is None
                        else f"{loop['compile_speedup']:.2f}"),
        "gpu_compile_seconds": ("-" if loop["compile_seconds"] is None
                                else f"{loop['compile_seconds']:.1f}"),
        "gpu_memory": "not measured" if memory is None else f"{memory:.0f} MiB",
        "gpu_k_table": table(["concurrent trials k", "trials", "first start to last end",
                              "trials per hour", "start-up"], k_rows),
    }

