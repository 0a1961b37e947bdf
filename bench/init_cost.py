"""``init_cost_ratio``: what measuring the loss at initialization costs a trial, as a fraction
of one training epoch of the same model (a forward pass in train mode over at most
``INIT_SAMPLES`` training samples, against forward, backward and step over all of them)."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BATCH, LR, WEIGHT_DECAY, Plan, interleaved, median


def _trainer(data: Any, width: int) -> Any:
    from study.training import HParams, Trainer

    return Trainer(HParams(width=width, lr=LR, batch_size=BATCH, weight_decay=WEIGHT_DECAY),
                   data, epochs=1, seed=0)


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_init_cost(data: Any, plan: Plan, device: Any) -> dict[str, Any]:
    """Per width of the plan: seconds of ``initial_losses()`` and of one epoch, interleaved."""
    from study.training import INIT_SAMPLES

    per_width = {}
    for width in plan.widths:
        times = interleaved({
            "init": lambda w=width: _timed(_trainer(data, w).initial_losses),
            "epoch": lambda w=width: _timed(_trainer(data, w).fit),
        }, plan.overhead_repeats)
        per_width[str(width)] = {"times": times,
                                 "ratio": median(times["init"]) / median(times["epoch"])}
    return {"per_width": per_width, "ratio": median([v["ratio"] for v in per_width.values()]),
            "samples": min(data.n_train, INIT_SAMPLES), "n_train": data.n_train,
            "batch_size": BATCH, "device": str(device)}
