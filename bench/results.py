"""The results JSON in, ``bench/RESULTS.md`` out.

``bench/run.py`` writes every measurement to one JSON document; :func:`render` fills
``bench/template.md`` from that document alone (tables built from it, numbers as placeholders),
so the prose and the numbers cannot drift apart. Re-render without measuring::

    python bench/run.py --render [bench/results.json] [--out bench/RESULTS.md]
    python -m bench.results [bench/results.json] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import default_study, gap_cost, gpu, peers, sections, store_calls
from bench.harness import REPO

DEFAULT_JSON = REPO / "bench" / "results.json"
DEFAULT_MD = REPO / "bench" / "RESULTS.md"
TEMPLATE = Path(__file__).with_name("template.md")
SCHEMA = 1


# -- the JSON document ------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """``value`` as plain JSON: tuples as lists, numpy scalars as numbers, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(doc), indent=1, allow_nan=False) + "\n")


def load(path: Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA}")
    return doc


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def floor_figures(doc: dict[str, Any]) -> list[tuple[str, float]]:
    """``floor_fixed_ms_per_trial``, ``floor_with_close_ms_per_trial`` and ``fixed_over_floor``
    (none in results saved before bench/floor.py existed)."""
    floor = doc.get("floor") or {}
    if "per_trial_median_with_close" not in floor:
        return []
    fixed = doc["overhead"]["decomposition"]["per_trial_fixed"]
    return [("floor_fixed_ms_per_trial", floor["per_trial_median"] * 1000),
            ("floor_with_close_ms_per_trial", floor["per_trial_median_with_close"] * 1000),
            ("fixed_over_floor", fixed / floor["per_trial_median"])]


def figures(doc: dict[str, Any]) -> list[tuple[str, float]]:
    """The ``name=value`` figures of a run, in the order ``bench/run.py`` prints them."""
    o, a, p, dp = doc["overhead"], doc["analysis"], doc["pruning"], doc["data_path"]
    d = o["decomposition"]
    j = a[a["primary"]]["median"]
    seeds, summary = p["per_seed"], p["summary"]
    pairs = [
        ("overhead_service_seconds", o["median"]["service"]),
        ("overhead_trainer_seconds", o["median"]["trainer"]),
        ("overhead_bare_seconds", o["median"]["bare"]),
        ("trainer_ratio", o["trainer_ratio"]),
        ("bare_vs_trainer_val_loss_max_abs_diff", o["val_loss_max_abs_diff"]),
        ("per_trial_overhead_seconds", d["per_trial_overhead"]),
        ("per_epoch_overhead_seconds", d["per_epoch"]),
        ("session_fixed_seconds", d["session_fixed"]),
        ("fixed_ms_per_trial", d["per_trial_fixed"] * 1000),
        *floor_figures(doc),
        ("analysis_table_seconds_10k", j["table"]),
        ("analysis_table_seconds_10k_optuna_orm", j["table_orm"]),
        ("report_seconds_10k", j["report"]),
    ]
    if "journal" in a:
        pairs += [("analysis_table_seconds_10k_journal", a["journal"]["median"]["table"]),
                  ("analysis_seconds_10k_journal", a["journal"]["median"]["analysis"])]
    pairs += [
        ("analysis_seconds_10k", j["analysis"]),
        ("pruning_epochs_pruned", sections.med([row["median"]["epochs"] for row in seeds])),
        ("pruning_epochs_unpruned", sections.med([row["none"]["epochs"] for row in seeds])),
        ("pruning_seconds_pruned", sections.med([row["median"]["seconds"] for row in seeds])),
        ("pruning_seconds_unpruned", sections.med([row["none"]["seconds"] for row in seeds])),
    ]
    if "hyperband" in summary:
        pairs += [("pruning_hyperband_epoch_saving", summary["hyperband"]["saving"]),
                  ("pruning_hyperband_best_ratio", summary["hyperband"]["best_ratio"])]
    pairs += [
        ("pruning_replay_epoch_saving", summary["replay"]["saving"]),
        ("pruning_replay_best_ratio", summary["replay"]["best_ratio"]),
        ("pruning_epoch1_final_rank_corr", summary["replay"]["rank_corr"]),
        ("pruning_epoch_saving", summary["median"]["saving"]),
        ("pruning_best_ratio", summary["median"]["best_ratio"]),
        ("data_path_tensor_samples_per_s", dp["median"]["tensors"]),
        ("data_path_loader_samples_per_s", dp["median"]["dataloader"]),
        ("data_path_ratio", dp["ratio"]),
    ]
    if doc.get("init_cost"):
        pairs.append(("init_cost_ratio", doc["init_cost"]["ratio"]))
    if doc.get("gap_cost"):
        pairs.append(("gap_cost_ratio", doc["gap_cost"]["ratio"]))
    if doc.get("coverage"):
        from bench.coverage import figures as coverage_figures

        pairs += coverage_figures(doc["coverage"])
    if doc.get("real_replicates"):
        from bench.real_replicates import figures as replicate_figures

        pairs += replicate_figures(doc["real_replicates"])
    if doc.get("gpu"):
        from bench.gpu import figures as gpu_figures

        pairs += gpu_figures(doc["gpu"])
    if doc.get("default_study"):
        pairs.append(("overhead_ratio_default", doc["default_study"]["ratio"]))
    if doc.get("peers"):
        pairs += peers.figures(doc["peers"])
    pairs += [
        ("bench_seconds", doc["run"]["bench_seconds"]),
        ("overhead_ratio", o["ratio"]),
    ]
    return [(name, _num(value)) for name, value in pairs]


def pair_lines(doc: dict[str, Any]) -> list[str]:
    return [f"{name}={value:.6g}" for name, value in figures(doc)]


# -- rendering --------------------------------------------------------------------------------
def templates(path: Path = TEMPLATE) -> dict[str, string.Template]:
    """The sections of the template file, by name, in order."""
    parts = re.split(r"^<!-- section (\S+) -->\n", path.read_text(), flags=re.MULTILINE)
    return {name: string.Template(body.strip("\n"))
            for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def render(doc: dict[str, Any], json_name: str = "bench/results.json") -> str:
    """The Markdown of ``doc``: each section of the template, filled from ``doc`` alone."""
    parts = templates()
    common = {"json_name": json_name, "plan": doc["run"]["plan"]["name"],
              "pairs": "\n".join(pair_lines(doc))}
    fill = {
        "head": sections.head, "overhead": sections.overhead, "analysis": sections.analysis,
        "pruning": sections.pruning, "data_path": sections.data_path,
        "profile": sections.profile, "method": sections.method,
        "init_cost": sections.init_cost, "gap_cost": gap_cost.section,
        "coverage": sections.coverage,
        "real_replicates": sections.real_replicates,
        "default_study": default_study.section, "gpu": gpu.section,
        "store_calls": store_calls.section, "peers": peers.section,
    }
    out = []
    for name, template in parts.items():
        if name.endswith("-skipped"):
            continue
        if f"{name}-skipped" in parts and not doc.get(name):  # an optional section
            out.append(parts[f"{name}-skipped"].substitute(common))
        else:
            out.append(template.substitute({**common, **fill[name](doc)}))
    return "\n\n".join(out) + "\n"


def _display(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write(doc: dict[str, Any], md_path: Path, json_path: Path | None) -> None:
    """Render ``doc`` to ``md_path``; ``json_path`` names the JSON it was read from."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    name = _display(json_path) if json_path is not None else "(not written)"
    md_path.write_text(render(doc, name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render bench/RESULTS.md from the results "
                                                 "JSON, without measuring.")
    parser.add_argument("json", nargs="?", type=Path, default=DEFAULT_JSON,
                        help=f"Results JSON (default: {_display(DEFAULT_JSON)}).")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"Markdown file (default: {_display(DEFAULT_MD)}).")
    args = parser.parse_args(argv)
    out = args.out or DEFAULT_MD
    write(load(args.json), out, args.json)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
