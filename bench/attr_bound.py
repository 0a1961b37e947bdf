"""What the service's user attrs cost a trial, and the most any change to them could save.

The service against itself, interleaved in one run, with its per-trial attr writes changed by
this script (the binding of :func:`study.runtime._attrs.set_user_attrs` in
:mod:`study.runtime.objective`, through which every attr of a trial goes), nothing else:

- ``service``: as shipped, 16 writes per trial: the nine attrs the SPEC names and seven of its
  own (worker, sampler seed, training seed, settings, the two final values, the curve), one
  ``Trial.set_user_attr`` each, as Optuna has no call that sets several;
- ``packed``: the seven of its own as one record per call (11 writes): the storage-format
  change ``bench/RESULTS.md`` names as the largest lever left;
- ``no_attrs``: no attr at all (a study the analysis cannot read): a bound on what any change to
  the attrs could save.

Per variant: ``fixed_ms`` (the service's fixed cost per trial on the main thread, from
:mod:`bench.costmeter`, as ``fixed_ms_per_trial``) and ``wall`` (the study's seconds, median).
Not part of ``bench/run.py``: run it on its own (about 2 minutes with the defaults)::

    python bench/attr_bound.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.costmeter import CostMeter
from bench.floor import SPEC_ATTRS
from bench.harness import Workspace, interleaved, median
from bench.overhead import decompose, run_instrumented

VARIANTS = ("service", "packed", "no_attrs")
RECORD = "record"  # ``packed``: the key prefix of the one record per call


def packed_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with every key the SPEC does not name moved into one record."""
    own = {k: v for k, v in attrs.items() if k not in SPEC_ATTRS}
    kept = {k: v for k, v in attrs.items() if k in SPEC_ATTRS}
    return {**kept, f"{RECORD}_{next(iter(own))}": own} if own else kept


@contextlib.contextmanager
def attr_writes(variant: str) -> Iterator[None]:
    """The service's per-trial attr writes as ``variant`` makes them (see the module)."""
    from study.runtime import objective

    shipped = objective.set_user_attrs

    def changed(trial: Any, attrs: Mapping[str, Any]) -> None:
        if variant == "packed":
            shipped(trial, packed_attrs(attrs))

    if variant != "service":
        objective.set_user_attrs = changed
    try:
        yield
    finally:
        objective.set_user_attrs = shipped


def bench_attr_bound(ws: Workspace, data: Any, *, widths: Sequence[int], repeats: int
                     ) -> dict[str, Any]:
    """The three variants, interleaved ``repeats`` times after a warm-up round.

    Args:
        ws: Where each study's fresh stores are made.
        data: The training data (digits).
        widths: One trial per width (the overhead figure's trials).
        repeats: Timed rounds (at least 1).

    Returns:
        ``{"widths", "repeats", "variants": {name: {"fixed_ms", "wall", "times"}}}``.
    """
    meters: dict[str, list[tuple[float, CostMeter]]] = {v: [] for v in VARIANTS}

    def variant(name: str) -> Callable[[], float]:
        def run() -> float:
            meters[name].append(run_instrumented(ws, data, widths=widths, device="cpu",
                                                 tag=name, around=attr_writes(name)))
            return meters[name][-1][0]
        return run

    times = interleaved({name: variant(name) for name in VARIANTS}, repeats)
    result: dict[str, Any] = {"widths": list(widths), "repeats": repeats, "variants": {}}
    for name in VARIANTS:
        d = decompose(meters[name][1:], len(widths), bare_seconds=0.0)  # [0]: the warm-up
        result["variants"][name] = {"fixed_ms": d["per_trial_fixed"] * 1000,
                                    "wall": median(times[name]), "times": times[name]}
    return result


def lines(result: Mapping[str, Any]) -> list[str]:
    """``name=value`` lines, and each variant's share of the shipped service's figures."""
    v = result["variants"]
    out = []
    for name in VARIANTS:
        out += [f"attr_bound_{name}_fixed_ms_per_trial={v[name]['fixed_ms']:.1f}",
                f"attr_bound_{name}_wall_s={v[name]['wall']:.3f}"]
        if name != "service":
            out += [f"attr_bound_{name}_fixed_over_service="
                    f"{v[name]['fixed_ms'] / v['service']['fixed_ms']:.3f}",
                    f"attr_bound_{name}_wall_over_service="
                    f"{v[name]['wall'] / v['service']['wall']:.3f}"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (default 9)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, but got {args.repeats}")
    import torch

    from study.training.data import load_dataset

    ws = Workspace()
    cwd = Path.cwd()
    os.chdir(ws.root)  # MLflow puts artifacts under ./mlruns: keep them in the workspace
    try:
        data = load_dataset("digits", seed=0, device=torch.device("cpu"))
        result = bench_attr_bound(ws, data, widths=(8, 16, 32), repeats=args.repeats)
    finally:
        os.chdir(cwd)
        ws.close()
    print("\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
