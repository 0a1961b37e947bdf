"""The loss landscape of trained trials (Li et al., 2018): filter-normalized directions, 1D and
2D probes, sharpness and flatness, and their figures.

The names below are pure (torch, numpy, matplotlib; no Optuna, MLflow or pyplot), so they serve
any model. The ``study landscape`` command, which probes a study's trials and stores the results
with them, is :func:`study.landscape.command.probe_trials`; :mod:`study.landscape.results` reads
those results back.
"""

from study.landscape.directions import filter_normalized_direction, random_directions
from study.landscape.plots import plot_1d, plot_2d, sharpness_figure
from study.landscape.probes import (
    FLATNESS_RISE,
    SHARPNESS_DISTANCE,
    Curve1D,
    Surface2D,
    flatness_radius,
    probe_1d,
    probe_2d,
    sharpness,
)

__all__ = [
    "FLATNESS_RISE",
    "SHARPNESS_DISTANCE",
    "Curve1D",
    "Surface2D",
    "filter_normalized_direction",
    "flatness_radius",
    "plot_1d",
    "plot_2d",
    "probe_1d",
    "probe_2d",
    "random_directions",
    "sharpness",
    "sharpness_figure",
]
