"""The loss landscape of trained trials (Li et al., 2018): filter-normalized directions, 1D and
2D probes, sharpness and flatness, and their figures.

The names below are pure (torch, numpy, matplotlib; no Optuna, MLflow or pyplot), so they serve
any model. The ``study landscape`` command, which probes a study's trials and stores the results
with them, is :func:`study.landscape.command.probe_trials`; :mod:`study.landscape.results` reads
those results back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
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

_EXPORTS = {
    "filter_normalized_direction": "study.landscape.directions",
    "random_directions": "study.landscape.directions",
    "plot_1d": "study.landscape.plots",
    "plot_2d": "study.landscape.plots",
    "sharpness_figure": "study.landscape.plots",
    "FLATNESS_RISE": "study.landscape.probes",
    "SHARPNESS_DISTANCE": "study.landscape.probes",
    "Curve1D": "study.landscape.probes",
    "Surface2D": "study.landscape.probes",
    "flatness_radius": "study.landscape.probes",
    "probe_1d": "study.landscape.probes",
    "probe_2d": "study.landscape.probes",
    "sharpness": "study.landscape.probes",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
