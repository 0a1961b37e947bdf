"""How often the analysis's 95% intervals cover the truth, on simulated studies.

Usage::

    python bench/coverage.py [--studies 200] [--out bench/coverage.json]

Each scenario of :data:`study.analysis.simulation.SCENARIOS` is simulated ``--studies`` times
(seeded); every study is analyzed as ``study analyze`` would, and its intervals are compared
with the simulation's true size effects (total, data and penalty part, at initialization and
over the first epoch) and true threshold weight decay. Verdicts are checked for contradicting
the truth. Prints a table, then ``name=value`` lines; ``--out`` keeps every number as JSON.
``bench/run.py`` runs the same (200 studies per scenario; 5 with ``--quick``, 1 with
``--smoke``) and puts the table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `study` and `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.analysis import analyze
from study.analysis.simulation import REPLICATE_SCENARIO, SCENARIOS, Truth, simulate
from study.analysis.verdict import no_increase_tolerance

PARTS = ("total", "data", "penalty")
QUESTIONS = ("init", "early")
NOMINAL = (0.90, 0.98)


def _covers(ci: Sequence[float | None], value: float) -> bool:
    lo, hi = ci
    return (lo is None or lo <= value + 1e-12) and (hi is None or value - 1e-12 <= hi)


def _contradicts(code: str, truth: dict[str, float], tolerance: float) -> bool:
    t, d, p = truth["total"], truth["data"], truth["penalty"]
    return {"no-increase": t > 1.5 * tolerance,
            "penalty": t <= 0 or p <= 0 or d >= tolerance,
            "both": t <= 0 or p <= 0 or d <= 0,
            "optimization": t <= 0 or d <= 0}.get(code, False)


def one_study(scenario: Any, seed: int, truth: Truth) -> dict[str, Any]:
    """The coverage outcomes of one simulated study."""
    table = simulate(scenario, seed)
    document = analyze(table, study_name="sim", early_epochs=1, compare_widths=scenario.widths)
    out: dict[str, Any] = {}
    for question, block in (("init", document["init"]), ("early", document)):
        ref = block["reference"]
        settings = {"widths": scenario.widths, "lr": ref["lr"],
                    "batch_size": round(ref["batch_size"])}
        true = truth.effects(question, weight_decay=ref["weight_decay"],
                             mode=ref["penalty_mode"], **settings)
        for part in PARTS:
            effect = block["decomposition"][f"width_effect_{part}"]
            out[f"{question}/{part}"] = _covers(effect["ci95"], true[part])
        found = block["threshold"]
        true_threshold = truth.threshold(question, **settings)
        low, high = found["searched_range"]
        if true_threshold is not None and low <= true_threshold <= high:
            out[f"{question}/threshold"] = _covers(found["ci95"], true_threshold)
            # An interval open on a side covers by construction: count how often.
            out[f"{question}/threshold_open"] = None in found["ci95"]
        tolerance = no_increase_tolerance(float(np.median(table[f"{question}_loss"])))
        code = block["verdict"]["code"]
        out[f"{question}/code"] = code
        out[f"{question}/contradicts"] = _contradicts(code, true, tolerance)
    return out


def replicates(studies: int, truth: Truth) -> dict[str, Any]:
    """``studies`` replicates of one setting (:data:`REPLICATE_SCENARIO`): per question and
    part, how often the intervals hold the common truth, the spread of the estimates and their
    mean standard error, and how often the verdict is ``penalty``."""
    scenario = REPLICATE_SCENARIO
    found: dict[str, list[Any]] = defaultdict(list)
    for seed in range(studies):
        document = analyze(simulate(scenario, 3_000_000 + seed), study_name="sim",
                           early_epochs=1, compare_widths=scenario.widths)
        for question, block in (("init", document["init"]), ("early", document)):
            true = truth.effects(question, widths=scenario.widths, lr=scenario.lr[0],
                                 batch_size=64, weight_decay=scenario.weight_decay[0],
                                 mode="l2-in-loss")
            for part in PARTS:
                effect = block["decomposition"][f"width_effect_{part}"]
                found[f"{question}/{part}/estimate"].append(effect["estimate"])
                found[f"{question}/{part}/se"].append(effect["se"])
                found[f"{question}/{part}/covers"].append(_covers(effect["ci95"], true[part]))
            found[f"{question}/penalty_verdict"].append(block["verdict"]["code"] == "penalty")
    out: dict[str, Any] = {"scenario": scenario.name, "studies": studies}
    for question in QUESTIONS:
        for part in PARTS:
            key = f"{question}/{part}"
            spread = float(np.std(found[f"{key}/estimate"], ddof=1))
            se = float(np.mean(found[f"{key}/se"]))
            out[key] = {"coverage": float(np.mean(found[f"{key}/covers"])), "sd": spread,
                        "mean_se": se, "ratio": spread / se if se > 0 else None}
        out[f"{question}/penalty_verdicts"] = float(np.mean(found[f"{question}/penalty_verdict"]))
    return out


def replicate_lines(result: dict[str, Any]) -> list[str]:
    """The replicate check as Markdown rows (question/part)."""
    rep = result.get("replicates")
    if not rep:
        return ["Not measured in the run that wrote these results (`python bench/coverage.py` "
                "measures it)."]
    lines = ["| question/part | coverage of the common truth | SD of the estimates | "
             "mean standard error | SD / SE |", "|---|---|---|---|---|"]
    for question in QUESTIONS:
        for part in PARTS:
            r = rep[f"{question}/{part}"]
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {question}/{part} | {r['coverage']:.3f} | {r['sd']:.4f} | "
                         f"{r['mean_se']:.4f} | {ratio} |")
    verdicts = ", ".join(f"{q} {rep[f'{q}/penalty_verdicts']:.0%}" for q in QUESTIONS)
    return [*lines, "", f"Verdict `penalty` in {verdicts} of the {rep['studies']} replicates."]


def run(studies: int) -> dict[str, Any]:
    """Every scenario, ``studies`` times: coverage rates and verdict counts."""
    truth, scenarios = Truth(), {}
    pooled: dict[str, list[bool]] = defaultdict(list)
    started = time.perf_counter()
    for index, scenario in enumerate(SCENARIOS):
        outcomes = [one_study(scenario, 1_000_000 + 10_000 * index + s, truth)
                    for s in range(studies)]
        rates: dict[str, Any] = {}
        for key in [f"{q}/{p}" for q in QUESTIONS
                    for p in (*PARTS, "threshold", "threshold_open")]:
            hits = [o[key] for o in outcomes if key in o]
            pooled[key] += hits
            rates[key] = {"coverage": float(np.mean(hits)) if hits else None, "n": len(hits)}
        for q in QUESTIONS:
            codes = [o[f"{q}/code"] for o in outcomes]
            rates[f"{q}/codes"] = {c: codes.count(c) for c in sorted(set(codes))}
            rates[f"{q}/contradicting"] = int(sum(o[f"{q}/contradicts"] for o in outcomes))
        scenarios[scenario.name] = rates
        print(f"  {scenario.name}: {studies} studies", flush=True)
    overall = {key: {"coverage": float(np.mean(v)), "n": len(v)} for key, v in pooled.items()}
    replicated = replicates(max(studies, 8), truth)  # fewer than 8 tell no spread
    print(f"  {REPLICATE_SCENARIO.name}: {replicated['studies']} replicates", flush=True)
    return {"studies_per_scenario": studies, "nominal": list(NOMINAL),
            "seconds": time.perf_counter() - started, "scenarios": scenarios,
            "overall": overall, "replicates": replicated}


def table_lines(result: dict[str, Any]) -> list[str]:
    """The coverage table as Markdown rows (scenario x question/part)."""
    keys = [f"{q}/{p}" for q in QUESTIONS for p in (*PARTS, "threshold", "threshold_open")]
    lines = ["| scenario | " + " | ".join(keys) + " | contradicting verdicts |",
             "|---|" + "---|" * (len(keys) + 1)]
    rows = [*result["scenarios"].items(), ("all scenarios", result["overall"])]
    for name, rates in rows:
        cells = []
        for key in keys:
            rate = rates.get(key, {})
            cells.append("-" if rate.get("coverage") is None
                         else f"{rate['coverage']:.3f} (n={rate['n']})")
        wrong = sum(rates.get(f"{q}/contradicting", 0) for q in QUESTIONS) \
            if name != "all scenarios" else sum(
                r.get(f"{q}/contradicting", 0) for r in result["scenarios"].values()
                for q in QUESTIONS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wrong} |")
    return lines


def figures(result: dict[str, Any]) -> list[tuple[str, float]]:
    """``name=value`` pairs: pooled coverage per question and part (``_threshold_open``: the
    share of threshold intervals open on a side), and the replicates' coverage and SD / SE."""
    pairs = [(f"coverage_{key.replace('/', '_')}", rate["coverage"])
             for key, rate in sorted(result["overall"].items())]
    rep = result.get("replicates") or {}
    for question in QUESTIONS:
        for part in PARTS:
            r = rep.get(f"{question}/{part}")
            if r:
                pairs.append((f"replicate_coverage_{question}_{part}", r["coverage"]))
                if r["ratio"] is not None:
                    pairs.append((f"replicate_sd_se_ratio_{question}_{part}", r["ratio"]))
    wrong = sum(r.get(f"{q}/contradicting", 0) for r in result["scenarios"].values()
                for q in QUESTIONS)
    return [*pairs, ("contradicting_verdicts", float(wrong)),
            ("coverage_seconds", result["seconds"])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--studies", type=int, default=200,
                        help="Simulated studies per scenario (default 200).")
    parser.add_argument("--out", type=Path, default=None, help="Write every number as JSON.")
    args = parser.parse_args(argv)
    if args.studies < 1:
        print(f"error: `studies` must be >= 1, but got studies={args.studies}.",
              file=sys.stderr)
        return 1
    print(f"coverage: {len(SCENARIOS)} scenarios x {args.studies} simulated studies", flush=True)
    result = run(args.studies)
    print("\n".join(table_lines(result)))
    print("\n".join(replicate_lines(result)))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    print("\n".join(f"{name}={value:.6g}" for name, value in figures(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
