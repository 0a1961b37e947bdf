"""``overhead_ratio``: the service (``run_session``) over the hand-written loop :func:`bare_fit`
on the same trials, and where the service's time goes (:mod:`bench.costmeter`).

The cost model ``(T + per-trial cost + session cost / N) / T`` turns the measured costs into
predictions for other trial lengths (:func:`predicted_ratio`, :func:`trial_seconds_for`); the
results label them as predictions.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.costmeter import OTHER, SERVICE_CATEGORIES, TRAIN_FIT, TRAIN_INIT, CostMeter
from bench.harness import (
    BATCH,
    EPOCHS,
    LR,
    WEIGHT_DECAY,
    Plan,
    Workspace,
    interleaved,
    median,
    sync,
)


def _amp_dtype(device: Any) -> Any:
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def bare_fit(data: Any, width: int, *, epochs: int = EPOCHS, lr: float = LR,
             batch_size: int = BATCH, weight_decay: float = WEIGHT_DECAY,
             seed: int = 0, on_epoch: Callable[[int, float, float], None] | None = None) -> float:
    """The minimal loop the service is compared with; returns the last validation loss.

    ``on_epoch(epoch, train_loss, val_loss)``, when given, is called after each epoch's one host
    synchronization (the hook of the peers' logging, :mod:`bench.peers`).

    Same model (``build_model``), Adam, the same L2-in-loss penalty, the same device-resident
    tensors, batch order (a seeded ``randperm`` on the device) and batch size as the Trainer;
    mixed precision and channels_last on CUDA as the Trainer does; validation every epoch; one
    host synchronization per epoch, none per step.
    """
    import torch
    import torch.nn.functional as F

    from study.training.models import build_model
    from study.training.penalty import PenaltyMode, penalized_parameters, penalty_term

    device = data.x_train.device
    fmt = (torch.channels_last if device.type == "cuda" and data.spatial_dims == 2
           else torch.preserve_format)
    model = build_model("cnn", width=width, in_channels=data.in_channels,
                        n_classes=data.n_classes, input_size=data.input_size,
                        seed=seed).to(device, memory_format=fmt)
    kernels = penalized_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    amp = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    n, val_loss = data.n_train, math.nan
    steps = sum(1 for lo in range(0, n, batch_size) if min(batch_size, n - lo) >= 2)
    for epoch in range(epochs):
        model.train()
        train_sum = torch.zeros((), device=device)
        order = torch.randperm(n, generator=generator, device=device)
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            if idx.numel() < 2:
                continue
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(data.x_train[idx].contiguous(memory_format=fmt))
            loss = F.cross_entropy(logits.float(), data.y_train[idx])
            loss = loss + penalty_term(kernels, mode=PenaltyMode.L2_IN_LOSS,
                                       weight_decay=weight_decay)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            train_sum += loss.detach()
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp,
                                                    enabled=amp is not None):
            val = F.cross_entropy(model(data.x_val.contiguous(memory_format=fmt)).float(),
                                  data.y_val)
        train_total, val_loss = torch.stack([train_sum, val.float()]).tolist()  # the one sync
        if on_epoch is not None:
            on_epoch(epoch, train_total / steps, val_loss)
    return val_loss


def overhead_config(storage: str, tracking: str, widths: Sequence[int], device: str,
                    **changes: Any) -> Any:
    from study.config import StudyConfig

    values = dict(study_name="bench-overhead", storage=storage, tracking_uri=tracking,
                  experiment="bench", dataset="digits", epochs=EPOCHS, early_epochs=1,
                  width_min=min(widths), width_max=max(widths), lr_min=LR, lr_max=LR,
                  batch_sizes=(BATCH,), weight_decay_min=WEIGHT_DECAY,
                  weight_decay_max=WEIGHT_DECAY, pruner="none", n_trials=len(widths),
                  device=device, seed=0)
    values.update(changes)
    return StudyConfig(**values)


def prepare_service(ws: Workspace, widths: Sequence[int], device: str, tag: str,
                    **changes: Any) -> Any:
    """Fresh stores holding the study with ``widths`` enqueued (the pattern of
    tests/runtime_tests/test_session.py); returns the config to pass to ``run_session``.
    ``changes`` override fields of :func:`overhead_config` (``epochs``)."""
    from study.runtime.lifecycle import load_study, prepare_study

    _, storage, tracking = ws.fresh(tag)
    config = overhead_config(storage, tracking, widths, device, **changes)
    prepared = prepare_study(config)
    study = load_study(prepared).study
    for width in widths:
        study.enqueue_trial({"width": width})
    prepared.storage.remove_session()
    return config


def run_service(config: Any, data: Any) -> tuple[float, Any]:
    from study.runtime.session import run_session

    start = time.perf_counter()
    result = run_session(config, data=data, out=io.StringIO())
    seconds = time.perf_counter() - start
    if result.counts.get("COMPLETE") != config.n_trials:
        raise RuntimeError(f"service run finished {result.counts}, expected "
                           f"{config.n_trials} COMPLETE trials")
    return seconds, result


def run_instrumented(ws: Workspace, data: Any, *, widths: Sequence[int], device: Any,
                     tag: str, around: contextlib.AbstractContextManager[Any] | None = None
                     ) -> tuple[float, CostMeter]:
    """One service study on fresh stores with every store call timed (``around``: entered
    with the timers, e.g. a change to what the service writes); its seconds and its meter.

    Raises:
        RuntimeError: A category the service must see saw no call (see :class:`CostMeter`).
    """
    config = prepare_service(ws, widths, str(device), tag)
    gc.collect()
    meter = CostMeter()
    with around or contextlib.nullcontext(), meter.installed():
        seconds = run_service(config, data)[0]
    meter.require(SERVICE_CATEGORIES)
    return seconds, meter


def bench_overhead(ws: Workspace, data: Any, plan: Plan, device: Any, *,
                   also: Mapping[str, Callable[[], float]] | None = None) -> dict[str, Any]:
    """The four variants, interleaved (with the variants ``also``, whose seconds join
    ``times`` and ``median``); the decomposition comes from the instrumented one."""
    from study.training.trainer import HParams, Trainer

    widths = plan.widths

    def service() -> float:
        config = prepare_service(ws, widths, str(device), "overhead")
        gc.collect()
        return run_service(config, data)[0]

    meters: list[tuple[float, CostMeter]] = []

    def instrumented() -> float:
        meters.append(run_instrumented(ws, data, widths=widths, device=device,
                                       tag="instrumented"))
        return meters[-1][0]

    def trainer() -> float:
        start = time.perf_counter()
        for width in widths:
            Trainer(HParams(width, LR, BATCH, WEIGHT_DECAY), data, epochs=EPOCHS, seed=0).fit()
        sync(device)
        return time.perf_counter() - start

    def bare() -> float:
        start = time.perf_counter()
        for width in widths:
            bare_fit(data, width)
        sync(device)
        return time.perf_counter() - start

    # Same configuration, same seed: the bare loop must land where the Trainer lands.
    check = [abs(Trainer(HParams(w, LR, BATCH, WEIGHT_DECAY), data, epochs=EPOCHS,
                         seed=0).fit()[-1].val_loss - bare_fit(data, w)) for w in widths]
    times = interleaved({"service": service, "instrumented": instrumented,
                         "trainer": trainer, "bare": bare, **(also or {})},
                        plan.overhead_repeats)
    med = {name: median(values) for name, values in times.items()}
    pair_ratios = [s / b for s, b in zip(times["service"], times["bare"], strict=True)]
    return {
        "widths": list(widths), "epochs": EPOCHS, "dataset": "digits",
        "n_train": int(data.n_train), "n_val": int(data.y_val.shape[0]),
        "times": times, "median": med,
        "ratio": med["service"] / med["bare"],
        "trainer_ratio": med["trainer"] / med["bare"],
        "pair_ratio_median": median(pair_ratios),
        "val_loss_max_abs_diff": max(check),
        "decomposition": decompose(meters[1:], len(widths), med["bare"]),  # [0]: warm-up
    }


def decompose(runs: Sequence[tuple[float, CostMeter]], n: int,
              bare_seconds: float) -> dict[str, Any]:
    """Where the service's time goes, per epoch, per trial and per session (medians)."""
    keys = sorted({k for _, meter in runs for k in meter.seconds})
    seconds = {k: median([meter.seconds.get(k, 0.0) for _, meter in runs]) for k in keys}
    calls = {k: median([meter.calls.get(k, 0) for _, meter in runs]) for k in keys}
    wall = median([wall for wall, _ in runs])
    seconds[(OTHER, "session")] = max(wall - sum(seconds.values()), 0.0)
    trial: dict[str, float] = defaultdict(float)
    trial_calls: dict[str, float] = defaultdict(float)
    for (category, scope), value in seconds.items():
        if scope != "session":
            trial[category] += value
            trial_calls[category] += calls.get((category, scope), 0)
    session = {k: v for (k, scope), v in seconds.items() if scope == "session"}
    training = sum(v for k, v in trial.items() if k.startswith("training"))
    per_epoch = sum(v for (k, scope), v in seconds.items()
                    if scope == "epoch" and not k.startswith("training")) / n / EPOCHS
    background = {k: median([meter.background.get(k, 0.0) for _, meter in runs])
                  for k in sorted({k for _, meter in runs for k in meter.background})}
    per_trial_overhead = (sum(trial.values()) - training) / n
    # The loss at initialization costs a fraction of an epoch of the same model: it scales
    # with the training time, unlike the store calls.
    fit_epoch = trial.get(TRAIN_FIT, 0.0) / n / EPOCHS
    init_fraction = trial.get(TRAIN_INIT, 0.0) / n / fit_epoch if fit_epoch > 0 else 0.0
    return {
        "wall": wall, "n_trials": n, "n_runs": len(runs), "epochs": EPOCHS,
        "trial": dict(trial), "trial_calls": dict(trial_calls), "session": session,
        "background": background,
        "training_per_trial": training / n,
        "per_trial_overhead": per_trial_overhead,
        "per_epoch": per_epoch,
        "per_trial_fixed": per_trial_overhead - per_epoch * EPOCHS,
        "session_fixed": sum(session.values()),
        "init_epoch_fraction": init_fraction,
        "bare_per_trial": bare_seconds / n,
    }


# -- predictions from the cost model (not measurements) ---------------------------------------
def _init_share(d: dict[str, Any], epochs: int) -> float:
    """The loss at initialization as a share of a trial's training time (it costs a fixed
    fraction of one epoch)."""
    return d.get("init_epoch_fraction", 0.0) / epochs


def _store_cost(d: dict[str, Any], epochs: int, n_trials: int) -> float:
    """Seconds per trial outside training: its fixed cost, its epochs' and its share of the
    session's."""
    return d["per_trial_fixed"] + epochs * d["per_epoch"] + d["session_fixed"] / n_trials


def predicted_ratio(d: dict[str, Any], seconds: float, epochs: int, n_trials: int) -> float:
    """Predicted service/bare ratio of a study of ``n_trials`` trials that each train for
    ``seconds`` over ``epochs`` epochs, from the measured decomposition ``d``."""
    return (seconds + _store_cost(d, epochs, n_trials)) / seconds + _init_share(d, epochs)


def trial_seconds_for(d: dict[str, Any], ratio: float, epochs: int, n_trials: int) -> float:
    """Predicted training time per trial above which the ratio falls under ``ratio``
    (infinite when the loss at initialization alone costs more than ``ratio - 1``)."""
    room = ratio - 1 - _init_share(d, epochs)
    return _store_cost(d, epochs, n_trials) / room if room > 0 else math.inf
