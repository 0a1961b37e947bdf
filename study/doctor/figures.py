"""The doctor's figures, as PNG bytes drawn from each check's figure data.

Kinds: ``lr`` (the range test: loss against learning rate, log scale, with the suggestion, the
divergence onset and the configured rate marked), ``overfit`` (one batch's loss per step),
``init`` (each layer's activation scale and gradient norm at initialization), ``batch-size``
(the gradient noise scale against the configured batch size), ``labels`` (the histogram of
out-of-fold self-confidence; ``labels-signal`` where the labels were not learned: validation
accuracy on real against shuffled labels), ``outliers`` (the largest training losses) and
``preprocessing`` (each sample's mean and std, training against validation).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from study.doctor.base import CheckResult
from study.report.figures import to_png

__all__ = ["CAPTIONS", "build_figure", "check_figure"]

CAPTIONS = {
    "lr": "Learning-rate range test: the smoothed loss as the learning rate grows "
          "exponentially; dotted lines mark the suggestion (steepest descent), the divergence "
          "onset and the configured rate.",
    "overfit": "One small batch trained alone: its loss per step (log scale).",
    "labels-signal": "Validation accuracy per epoch of a short training on the real training "
                     "labels and of one on the same labels shuffled: labels that belong to "
                     "their inputs lift the first far above the second.",
    "preprocessing": "Each sample's mean and standard deviation over its pixels (the channel "
                     "that differs most), training against validation: splits preprocessed "
                     "alike overlap.",
    "init": "At initialization, per layer with weights (forward order): the RMS of its output "
            "and the norm of its weights' gradient on one batch (log scales).",
    "labels": "Out-of-fold probability each training sample's model gives its own label "
              "(self-confidence); mislabeled samples pile up near 0.",
    "outliers": "The largest per-sample training losses after a short training, highest "
                "first; the dotted line is where a loss counts as extreme.",
    "batch-size": "The gradient noise scale B_simple at initialization and after a short "
                  "training, against the configured batch size; the band is where the batch "
                  "size is within 10x of the trained estimate.",
}
_MARKS = (("suggested_lr", "suggested", "#1e8449"), ("onset_lr", "divergence onset", "#c0392b"),
          ("configured_lr", "configured", "#2457a6"))


def check_figure(result: CheckResult) -> bytes | None:
    """The PNG of ``result``'s figure, or ``None`` when it has none (or no data to draw)."""
    fig = build_figure(result)
    return to_png(fig) if fig is not None else None


def build_figure(result: CheckResult) -> Figure | None:
    """``result``'s figure, or ``None`` when it has none (or no data to draw)."""
    data = result.figure
    if not data:
        return None
    draw = {"lr": _lr, "overfit": _overfit, "init": _init, "batch-size": _batch_size,
            "labels": _labels, "outliers": _outliers, "labels-signal": _labels_signal,
            "preprocessing": _preprocessing}.get(str(data.get("kind")))
    return draw(data) if draw is not None and _has_data(data) else None


def _has_data(data: Mapping[str, Any]) -> bool:
    series = {"lr": "loss", "overfit": "loss", "init": "layers", "batch-size": "b_simple",
              "labels": "self_confidence", "outliers": "loss_sorted",
              "labels-signal": "real", "preprocessing": "train_mean"}[str(data["kind"])]
    return any(v is not None for v in data.get(series) or [])


def _lr(data: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    if data.get("raw_loss"):
        ax.plot(data["lr"], data["raw_loss"], color="0.75", linewidth=0.8, label="loss per step")
    ax.plot(data["lr"], data["loss"], color="#333", linewidth=1.6, label="smoothed loss")
    for key, label, color in _MARKS:
        value = data.get(key)
        if value:
            ax.axvline(value, color=color, linestyle=":", linewidth=1.6,
                       label=f"{label} {value:.2g}")
    ax.set_xscale("log")
    losses = [v for v in data["loss"] if v == v]
    if losses:  # the divergence would squash the curve: cap the axis above the starting loss
        low = min(losses)
        ax.set_ylim(low - 0.05 * abs(low) - 0.05, max(losses[0], low) * 1.5 + 0.5)
    return _finished(fig, ax, x="learning rate", y="training loss",
                     title="Learning-rate range test", legend={"loc": "upper left"})


def _overfit(data: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(data["step"], [max(v, 1e-6) for v in data["loss"]], color="#2457a6")
    if data.get("target"):
        ax.axhline(data["target"], color="#1e8449", linestyle=":", label="near zero")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    return _finished(fig, ax, x="step", y="loss of the batch", title="Overfitting one batch")


def _init(data: Mapping[str, Any]) -> Figure:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    layers = list(data["layers"])
    kinds = list(data.get("layer_types") or [""] * len(layers))
    # "0 Conv2d", not the bare index of an nn.Sequential.
    names = [f"{name} {kind}".strip() for name, kind in zip(layers, kinds, strict=True)]
    fig = Figure(figsize=(7.5, 1.9 + 0.28 * len(layers)))
    axes = fig.subplots(1, 2, sharey=True)
    positions = list(range(len(layers)))
    for ax, key, label in ((axes[0], "activation_rms", "RMS of the layer's output"),
                           (axes[1], "grad_norm", "norm of the weights' gradient")):
        values = [max(float(v), 1e-12) for v in data.get(key) or [0.0] * len(layers)]
        # Points, not bars: on a log axis a bar's length depends on an arbitrary baseline.
        ax.hlines(positions, min(values) / 1.5, values, color="#c8d3e6", linewidth=1)
        ax.plot(values, positions, "o", color="#4C72B0")
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 1.5, max(values) * 1.5)
        # Decades over a wide range; 1-2-5 within a narrow one (which has no decade tick).
        wide = max(values) / min(values) > 30
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0),
                                              numticks=12))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if 1e-3 <= v < 1e4 else f"{v:.0e}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} (log)", fontsize=9)
        ax.grid(axis="x", color="#eeeeee")
    axes[0].set_yticks(positions, names, fontsize=8)
    axes[0].set_ylabel("layer (forward order)", fontsize=9)
    axes[0].invert_yaxis()
    loss, reference = data.get("loss"), data.get("reference_loss")
    if loss is not None and reference is not None:
        fig.suptitle(f"At initialization: loss {loss:.3g} against ln K = {reference:.3g}",
                     fontsize=11)
    fig.tight_layout()
    return fig


def _labels_signal(data: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    for key, label, color in (("real", "real labels", "#4C72B0"),
                              ("shuffled", "shuffled labels", "#8C8C8C")):
        values = list(data[key])
        ax.plot(range(1, len(values) + 1), values, color=color, linewidth=1.6, label=label)
    ax.set_ylim(0, 1)
    return _finished(fig, ax, x="epoch of the short training", y="validation accuracy",
                     title="Can the model learn these labels?", legend={"loc": "best"})


def _preprocessing(data: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for split, label, color in (("train", "training samples", "#4C72B0"),
                                ("val", "validation samples", "#DD8452")):
        shown, n = len(data[f"{split}_mean"]), data.get(f"n_{split}")
        count = f"{shown} of {n}" if n and n > shown else f"{shown}"
        ax.scatter(data[f"{split}_mean"], data[f"{split}_std"], s=7, alpha=0.45,
                   color=color, linewidths=0, label=f"{label} ({count})")
    channel = data.get("channel", 0)
    return _finished(fig, ax, x=f"per-sample mean (channel {channel})",
                     y=f"per-sample std (channel {channel})",
                     title="Training and validation inputs, sample by sample",
                     legend={"loc": "best", "markerscale": 2})


def _batch_size(data: Mapping[str, Any]) -> Figure:
    labels = list(data["labels"])
    values = [v if v is not None and v > 0 else float("nan") for v in data["b_simple"]]
    fig = Figure(figsize=(7.5, 2.6))
    ax = fig.add_subplot()
    ax.barh(range(len(labels)), values, color="#4C72B0")
    ax.set_yticks(list(range(len(labels))), labels)
    ax.invert_yaxis()
    trained = values[-1]
    if trained == trained:
        ax.axvspan(trained / 10, trained * 10, color="#1e8449", alpha=0.08,
                   label="within 10x of the trained estimate")
    configured = data["configured_batch_size"]
    ax.axvline(configured, color="#2457a6", linestyle=":", linewidth=1.6,
               label=f"configured batch size {configured}")
    ax.set_xscale("log")
    return _finished(fig, ax, x="B_simple = tr(Sigma) / |G|^2 (samples)", y="",
                     title="Gradient noise scale", legend={"loc": "lower right"})


def _labels(data: Mapping[str, Any]) -> Figure:
    counts, edges = list(data["self_confidence"]), list(data["bins"])
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:len(counts)], counts, width=widths, align="edge", color="#4C72B0")
    ax.set_yscale("symlog", linthresh=1)
    return _finished(fig, ax, x="out-of-fold probability of the sample's own label",
                     y="training samples", title="Self-confidence")


def _outliers(data: Mapping[str, Any]) -> Figure:
    losses = list(data["loss_sorted"])
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    ax.plot(range(1, len(losses) + 1), [max(v, 1e-6) for v in losses], color="#2457a6",
            marker=".", linewidth=1)
    if data.get("loss_floor"):
        ax.axhline(data["loss_floor"], color="#c0392b", linestyle=":",
                   label=f"extreme above {data['loss_floor']:.3g}")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    return _finished(fig, ax, x="rank (highest loss first)", y="training loss",
                     title="Largest per-sample losses")


def _finished(fig: Figure, ax: Any, *, x: str, y: str, title: str,
              legend: Mapping[str, Any] | None = None) -> Figure:
    """``fig`` with its axis labels, title and (given its options) legend, laid out."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    if legend is not None:
        ax.legend(fontsize=8, **legend)
    fig.tight_layout()
    return fig
