"""``gap_cost_ratio``: what splitting the validation gap costs a trial, as a share of one
training epoch of the same model (:mod:`study.training.gap`: forward passes over at most
``GAP_SAMPLES`` training samples in train mode, eval mode and, for models with BatchNorm and
dropout, the mixed mode, against forward, backward and step over all of them plus validation).

Two models at the plan's smallest width: ``cnn`` (BatchNorm, no dropout: two passes) and ``vgg``
with dropout (three passes, the most the measurement does). Per model, interleaved:

- ``epoch_off`` / ``epoch_on``: one epoch of a fresh trainer without / with the measurement;
- ``measure``: the measurement alone (``Trainer.gap_probe.sums()`` and a device
  synchronization) on a trainer that has trained one epoch.

``ratio`` is ``measure / epoch_off`` (medians): the measurement's own seconds, never negative.
``ratio_by_difference`` is ``(epoch_on - epoch_off) / epoch_off``, the same figure read from two
noisy totals, as a check (it can come out below 0 on a busy machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness import BATCH, LR, WEIGHT_DECAY, Plan, interleaved, median, sync

# cnn as the service trains it by default; vgg with dropout, so the mixed mode is priced too.
MODELS: dict[str, dict[str, float]] = {"cnn": {}, "vgg": {"dropout": 0.3}}


def _trainer(data: Any, model: str, width: int, *, measure_gap: bool) -> Any:
    from study.training import HParams, Trainer

    hp = HParams(width=width, lr=LR, batch_size=BATCH, weight_decay=WEIGHT_DECAY,
                 **MODELS[model])
    return Trainer(hp, data, model_name=model, epochs=1, seed=0, measure_gap=measure_gap)


def _timed(fn: Callable[[], Any], device: Any) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_gap_cost(data: Any, plan: Plan, device: Any) -> dict[str, Any]:
    """Per model: seconds of one epoch with and without the gap measurement and of the
    measurement alone, interleaved ``plan.overhead_repeats`` times after one warm-up round."""
    width = min(plan.widths)
    per_model = {}
    for model in MODELS:
        trained = _trainer(data, model, width, measure_gap=True)
        trained.fit()
        times = interleaved({
            "epoch_off": lambda m=model: _timed(
                _trainer(data, m, width, measure_gap=False).fit, device),
            "epoch_on": lambda m=model: _timed(
                _trainer(data, m, width, measure_gap=True).fit, device),
            "measure": lambda t=trained: _timed(t.gap_probe.sums, device),
        }, plan.overhead_repeats)
        off = median(times["epoch_off"])
        per_model[model] = {
            "times": times,
            "ratio": median(times["measure"]) / off,
            "ratio_by_difference": (median(times["epoch_on"]) - off) / off,
            "passes": 2 + int(trained.gap_probe.splits_mode),
            "options": MODELS[model],
        }
    return {"per_model": per_model,
            "ratio": median([v["ratio"] for v in per_model.values()]),
            "samples": trained.gap_samples, "n_train": data.n_train, "n_val": data.n_val,
            "batch_size": BATCH, "width": width, "device": str(device)}


def section(doc: dict[str, Any]) -> dict[str, str]:
    """The values of the results' gap-measurement section."""
    from bench.sections import spread, table

    c = doc["gap_cost"]
    rows = [[model, spread(v["times"]["measure"]), spread(v["times"]["epoch_off"]),
             str(v["passes"]), f"{v['ratio']:.3f}", f"{v['ratio_by_difference']:.3f}"]
            for model, v in c["per_model"].items()]
    return {"samples": str(c["samples"]), "n_train": str(c["n_train"]),
            "batch_size": str(c["batch_size"]), "device": c["device"],
            "cost_table": table(["model", "measurement", "one epoch without it", "passes",
                                 "ratio", "ratio from the epochs' difference"], rows),
            "ratio": f"{c['ratio']:.3f}"}
