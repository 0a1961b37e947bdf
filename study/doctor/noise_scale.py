"""The batch size against the gradient noise scale (McCandlish et al. 2018, "An empirical model
of large-batch training").

The simple noise scale ``B_simple = tr(Sigma) / |G|^2`` compares the per-sample gradient's
variance with the squared true gradient: batches much smaller than it take noisy steps
(a larger batch would use the lr better), batches much larger spend compute on gradient
precision that the steps cannot use. It is estimated with the unbiased two-batch-size
estimator of the paper's appendix A: on one pass over (up to :data:`MAX_SAMPLES` of) the
training split in disjoint batches of size ``b``, ``|G_small|^2`` is the mean squared norm of
the batch gradients and ``|G_big|^2`` the squared norm of their mean (``B_big = m * b``):

    |G|^2    = (B_big |G_big|^2 - b |G_small|^2) / (B_big - b)
    tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/b - 1/B_big)

Gradients are those of the data loss (the penalty's gradient has no noise) over all
parameters, in train mode as training sees them (BatchNorm on each batch's statistics, running
statistics restored; dropout on). ``b`` is the configured batch size, capped so that at least
:data:`MIN_BATCHES` batches enter the mean. The estimate is taken at initialization and after
a short training of a fresh model (:data:`TRAIN_EPOCHS` epochs, at most :data:`TRAIN_STEPS`
steps, at :func:`~study.doctor.base.training_lr`); the trained one decides.

Limits: the noise scale grows as the loss falls (McCandlish et al.); this is its value early
in training, and on a small training split it soon exceeds the split itself (the full batch).
BatchNorm makes batch gradients depend on the batch's size, which the estimator assumes away.
When the noise swamps the mean gradient the ``|G|^2`` estimate is not positive: the noise
scale is then not measurable here. Without the range test's suggestion a lr far too low for
the model leaves it near its start, where the mean gradient is small and the noise scale
large (small_net on digits at Adam's 1e-3: ~2000 after one epoch, a warning; 14-277 at the
suggestion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from study.doctor.base import CheckResult, DoctorInputs, training_lr
from study.doctor.lr_range import ShortTraining
from study.training.gap import preserved

__all__ = ["check_batch_size", "noise_scale"]

# Fewer batches would leave |G_big|^2 almost as noisy as a single batch's.
MIN_BATCHES = 8
# A pass over at most 4096 samples: the whole of digits, a fraction of an epoch elsewhere.
MAX_SAMPLES = 4096
# The short training: one epoch. On digits (seeds 0-4, batch 64) it takes the built-in cnn's
# noise scale from 59-72 to 85-98 (vgg 322-440, resnet 117-160, small_net 14-277); a second
# epoch doubles it or more (vgg 307-857) as the model memorizes a split of only 1437 samples,
# and the estimate nears the split itself, where it says more about the split than the batch.
TRAIN_EPOCHS = 1
TRAIN_STEPS = 200
# "Far" from the noise scale: a decade either way. McCandlish et al.'s trade-off, steps
# S = S_min (1 + B_crit / B) and samples E = E_min (1 + B / B_crit) with B_crit ~ B_simple:
# a tenth of it takes 11x the fewest steps, ten times it 11x the least compute.
FACTOR = 10.0
# The largest batch the check advises: an eighth of the training split (8 steps an epoch, the
# estimator's MIN_BATCHES). The noise scale weighs steps against compute, not generalization:
# SGD's noise goes as lr * N / B (Smith & Le 2018), so a batch that is a large share of the
# split is nearly full-batch descent. And there the estimate is not steady: on an 800-sample
# 4-class shapes set (batch 32) the built-in cnn's read 109, 994 and 90 over seeds 0-2, and a
# user's net 328, each advising a batch of 1 to 3 steps an epoch.
MAX_BATCH_FRACTION = 1 / 8


def noise_scale(run: ShortTraining, *, batch_size: int,
                generator: torch.Generator) -> dict[str, float | int | None]:
    """Estimate ``B_simple`` of ``run.model`` now (see the module docstring); the model's
    buffers, modes and gradients are left as they were.

    Returns:
        ``b_simple`` (None when ``|G|^2`` is not positive), ``g2`` (``|G|^2``), ``trace``
        (``tr(Sigma)``), ``b_small``, ``b_big`` and ``batches``.
    """
    data, model = run.data, run.model
    n = data.n_train
    b = max(2, min(batch_size, n // MIN_BATCHES))  # BatchNorm cannot use a single sample
    m = max(1, min(n, MAX_SAMPLES) // b)
    order = torch.randperm(n, generator=generator, device=run.device)
    params = [p for p in model.parameters() if p.requires_grad]
    square_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    total = None
    with preserved(model), run.noise.active():
        model.train()
        for c in range(m):
            idx = order[c * b:(c + 1) * b]
            loss = F.cross_entropy(model(data.x_train[idx]).float(), data.y_train[idx])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = torch.cat([g.reshape(-1) for g in grads if g is not None]).double()
            square_sum += flat @ flat
            total = flat if total is None else total + flat
    small = float(square_sum) / m
    big = float((total / m) @ (total / m)) if total is not None else 0.0
    b_big = m * b
    if m < 2 or not (math.isfinite(small) and math.isfinite(big)):
        return {"b_simple": None, "g2": None, "trace": None, "b_small": b, "b_big": b_big,
                "batches": m}
    g2 = (b_big * big - b * small) / (b_big - b)
    trace = (small - big) / (1 / b - 1 / b_big)
    b_simple = trace / g2 if g2 > 0 and math.isfinite(trace / g2) else None
    return {"b_simple": b_simple, "g2": g2, "trace": trace, "b_small": b, "b_big": b_big,
            "batches": m}


def _train(run: ShortTraining, inputs: DoctorInputs) -> int:
    """The short training; returns its steps."""
    bs = inputs.hparams.batch_size
    steps = min(TRAIN_STEPS, TRAIN_EPOCHS * max(1, inputs.data.n_train // max(bs, 1)))
    batches = run.batches(bs)
    for _ in range(steps):
        idx = next(batches)
        run.step(inputs.data.x_train[idx], inputs.data.y_train[idx])
    return steps


def check_batch_size(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Compare the configured batch size with the noise scale after a short training.

    Args:
        inputs: The data, model and hyperparameters.
        found: The results so far; the ``lr`` check's suggestion sets the learning rate of the
            short training.

    Returns:
        ``warn`` when the batch size lies more than :data:`FACTOR` times below ``B_simple``
        (capped at :data:`MAX_BATCH_FRACTION` of the training split) or above it (capped at
        the split); ``pass`` otherwise, or when ``B_simple`` is not measurable.
    """
    lr = training_lr(inputs, found)
    run = ShortTraining(inputs, lr=lr)
    at_init = noise_scale(run, batch_size=inputs.hparams.batch_size, generator=run.generator)
    steps = _train(run, inputs)
    trained = noise_scale(run, batch_size=inputs.hparams.batch_size, generator=run.generator)
    bs, n = inputs.hparams.batch_size, inputs.data.n_train
    details = {"configured_batch_size": bs, "lr": lr, "train_steps": steps,
               "b_simple_init": at_init["b_simple"], "b_simple": trained["b_simple"],
               "init": at_init, "trained": trained, "decided_by": "trained"}
    figure = {"kind": "batch-size", "labels": ["init", f"after {steps} steps"],
              "b_simple": [at_init["b_simple"], trained["b_simple"]],
              "configured_batch_size": bs, "n_train": n}
    budget = (f"{TRAIN_EPOCHS} epoch (<= {TRAIN_STEPS} steps) + 2 gradient passes over "
              f"<= {MAX_SAMPLES} samples")
    status, evidence, advice = _verdict(bs, n, at_init["b_simple"], trained["b_simple"], steps)
    return CheckResult("batch-size", status, evidence, advice, budget, details=details,
                       figure=figure)


def _verdict(bs: int, n: int, init: float | None, trained: float | None,
             steps: int) -> tuple[str, str, str]:
    """Status, evidence and advice of the batch-size check."""
    shown = f"{init:.3g}" if init is not None else "not measurable"
    if trained is None:
        return ("pass", f"batch size {bs}; B_simple at init {shown}, after {steps} steps not "
                        "measurable (the |G|^2 estimate is not positive, or a gradient not finite)",
                "the batch size is unjudged: the noise scale could not be measured on this "
                "split (it may exceed the split's size)")
    target = min(trained, n)  # no batch can exceed the training split
    largest = max(2, math.floor(n * MAX_BATCH_FRACTION))
    evidence = (f"batch size {bs}; B_simple at init {shown}, after {steps} steps "
                f"{trained:.3g} (decides)")
    capped, advised = trained > largest, min(target, largest)
    limit = (f"; no batch above {largest} is advised (an eighth of the {n} training samples)"
             if capped else "")
    if bs < advised / FACTOR:
        why = ("; not larger: a batch above an eighth of the training split leaves fewer than "
               "8 steps an epoch and little of SGD's noise" if capped else "")
        return ("warn", f"{evidence} > {FACTOR:g}x the batch{limit}",
                f"noisy steps: a batch nearer {advised:.0f} (with the lr scaled "
                f"up) would train in fewer steps{why}")
    if bs > FACTOR * target:
        return ("warn", evidence + f" < batch / {FACTOR:g}",
                f"wasted compute: a batch nearer {target:.0f} reaches the same loss for less")
    return ("pass", evidence + limit, "the noise scale grows as the loss falls: this is its "
                                      "early value, it does not judge the batch size late in "
                                      "training")
