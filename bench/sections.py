"""The placeholders of each section of ``bench/template.md``, from the results JSON alone.

Each function takes the whole document and returns ``{placeholder: text}``; tables are built
here from the JSON, prose lives in the template. Predictions (from the cost model of
:mod:`bench.overhead`) are labelled :data:`PREDICTION`; a device that was not measured reads
:data:`NOT_MEASURED`.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.floor import floor_note
from bench.overhead import predicted_ratio, trial_seconds_for
from bench.peers import summary_row

PREDICTION = "prediction (not measured)"
NOT_MEASURED = "not measured"
# (case, seconds of training per trial, epochs) of the prediction table; N: the default study.
PREDICTED_TRIALS = (("5 s", 5.0, 3), ("30 s", 30.0, 10), ("1 min", 60.0, 30),
                    ("5 min", 300.0, 100))
_COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: Sequence[float], unit: str = "s", digits: int = 3) -> str:
    """``median unit (min a, max b, n=k)``."""
    return (f"{med(values):.{digits}f} {unit} (min {min(values):.{digits}f}, "
            f"max {max(values):.{digits}f}, n={len(values)})")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def target(doc: dict[str, Any], name: str, unit: str = "") -> str:
    if name not in doc["targets"]:  # a results file from before the target existed
        return "none"
    op, limit = doc["targets"][name]
    return f"{op} {limit:g}{unit}"


def met(doc: dict[str, Any], name: str, value: float | None) -> str:
    if name not in doc["targets"]:
        return "-"
    op, limit = doc["targets"][name]
    return "yes" if value is not None and _COMPARE[op](value, limit) else "**no**"


def _other_device(device: str) -> str:
    return "cpu" if device.startswith("cuda") else "cuda (GPU)"


# -- sections ---------------------------------------------------------------------------------
def _summary_rows(doc: dict[str, Any]) -> list[list[str]]:
    o, a, p, dp = doc["overhead"], doc["analysis"], doc["pruning"], doc["data_path"]
    d = o["decomposition"]
    j = a[a["primary"]]["median"]
    ps = p["summary"]["median"]
    rows = [
        ["`overhead_ratio`", f"{o['ratio']:.3f}", target(doc, "overhead_ratio"),
         met(doc, "overhead_ratio", o["ratio"]),
         f"service {o['median']['service']:.2f} s vs bare loop {o['median']['bare']:.2f} s "
         f"({len(o['widths'])} trials)"],
        ["`fixed_ms_per_trial`", f"{d['per_trial_fixed'] * 1000:.1f} ms",
         target(doc, "fixed_ms_per_trial", " ms"),
         met(doc, "fixed_ms_per_trial", d["per_trial_fixed"] * 1000),
         "per trial outside training and the per-epoch writes (decomposition, section 1)"],
    ]
    f = doc.get("floor") or {}
    if "per_trial_median_with_close" in f:
        floor = f["per_trial_median"]
        rows.append(["`floor_fixed_ms_per_trial`", f"{floor * 1000:.1f} ms", "none", "-",
                     "an estimate of the least a trial's path costs the stores here under the "
                     "SPEC's contract (supported APIs, no training: `bench/floor.py`); "
                     f"{f['per_trial_median_with_close'] * 1000:.1f} ms with the run's close; "
                     f"`fixed_over_floor` {d['per_trial_fixed'] / floor:.2f}"])
    rows += [summary_row(doc)] if doc.get("peers") else []
    if doc.get("default_study"):
        ds = doc["default_study"]
        rows.append(["`overhead_ratio_default`", f"{ds['ratio']:.3f}", "none", "-",
                     f"default study of {ds['n_trials']} trials (TPE, median pruner) vs the "
                     f"bare loop replaying it: {ds['median']['service']:.2f} s vs "
                     f"{ds['median']['bare']:.2f} s"])
    rows += [
        ["`analysis_seconds_10k`", f"{j['analysis']:.2f} s",
         target(doc, "analysis_seconds_10k", " s"), met(doc, "analysis_seconds_10k",
                                                        j["analysis"]),
         f"SQLite storage (the default); table alone {j['table']:.2f} s, "
         f"{j['table_orm']:.2f} s through Optuna's ORM reader"],
        ["`report_seconds_10k`", f"{j['report']:.2f} s", target(doc, "report_seconds_10k", " s"),
         met(doc, "report_seconds_10k", j["report"]), "SQLite storage"],
    ]
    if "journal" in a:
        s = a["journal"]["median"]
        rows.append(["`analysis_seconds_10k_journal`", f"{s['analysis']:.2f} s",
                     target(doc, "analysis_seconds_10k_journal", " s"),
                     met(doc, "analysis_seconds_10k_journal", s["analysis"]),
                     f"journal storage; table alone {s['table']:.2f} s"])
    rows += [
        ["`pruning_epoch_saving`", f"{ps['saving']:.3f}", target(doc, "pruning_epoch_saving"),
         met(doc, "pruning_epoch_saving", ps["saving"]),
         f"{p['n_trials']} trials, median vs none, median of {len(p['per_seed'])} seed(s)"],
        ["`pruning_best_ratio`", _fmt(ps["best_ratio"], ".3f"),
         target(doc, "pruning_best_ratio"), met(doc, "pruning_best_ratio", ps["best_ratio"]),
         "best val loss, pruned / unpruned"],
        ["`data_path_ratio`", f"{dp['ratio']:.2f}", target(doc, "data_path_ratio"),
         met(doc, "data_path_ratio", dp["ratio"]),
         f"{dp['median']['tensors']:.0f} vs {dp['median']['dataloader']:.0f} samples/s"],
    ]
    return rows


def _load_note(doc: dict[str, Any]) -> str:
    """A warning when the 1-minute load average exceeded the core count at the start or end."""
    run, cores = doc["run"], int(doc["machine"].get("cores") or 0)
    start, end = (run[k][0] if run.get(k) else 0.0 for k in ("load_start", "load_end"))
    if not cores or max(start, end) <= cores:
        return ""
    return (f"**The machine was busy during this run** (1-minute load average {start:.2f} at the "
            f"start, {end:.2f} at the end, on {cores} cores): absolute figures (seconds, "
            f"samples/s) are inflated by other processes; ratios of variants interleaved in the "
            f"same run are less affected.")


def head(doc: dict[str, Any]) -> dict[str, str]:
    run, machine = doc["run"], doc["machine"]
    loads = "; ".join(" ".join(f"{v:.2f}" for v in run[k]) if run.get(k) else "n/a"
                      for k in ("load_start", "load_end"))
    device = machine["device"]
    devices = [[f"{device} (this run)", f"{doc['overhead']['ratio']:.3f}",
                f"{doc['data_path']['ratio']:.2f}"],
               [_other_device(device), NOT_MEASURED, NOT_MEASURED]]
    return {
        "date": run["date"], "bench_seconds": f"{run['bench_seconds']:.0f}",
        "load_note": _load_note(doc),
        "command": run["command"],
        "machine_table": table(["", ""], [*machine.items(),
                                          ("load average (1/5/15 min) at start; end", loads)]),
        "summary_table": table(["figure", "value", "target", "met", "measured against"],
                               _summary_rows(doc)),
        "devices_table": table(["device", "`overhead_ratio`", "`data_path_ratio`"], devices),
    }


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if math.isfinite(value) else "none (the initial loss alone exceeds it)"


def _prediction_rows(doc: dict[str, Any]) -> list[list[str]]:
    o, d = doc["overhead"], doc["overhead"]["decomposition"]
    n_study, epochs, here = doc["setup"]["study_n_trials"], d["epochs"], d["bare_per_trial"]
    rows = [
        ["this run", f"{here:.2f} s", epochs, d["n_trials"], f"{o['ratio']:.4f}", "measured"],
        ["this run, cost model", f"{here:.2f} s", epochs, d["n_trials"],
         f"{predicted_ratio(d, here, epochs, d['n_trials']):.4f}", PREDICTION],
        *[[f"T = {label}", f"{seconds:g} s", e, n_study,
           f"{predicted_ratio(d, seconds, e, n_study):.4f}", PREDICTION]
          for label, seconds, e in PREDICTED_TRIALS],
    ]
    op, limit = doc["targets"]["overhead_ratio"]
    for e in (epochs, 30):
        rows.append([f"shortest trial with a ratio {op} {limit:g}",
                     _seconds(trial_seconds_for(d, limit, e, n_study)), e, n_study,
                     f"{limit:g}", PREDICTION])
    device = doc["machine"]["device"]
    rows.append([f"any trial on {_other_device(device)}", "-", "-", "-", NOT_MEASURED,
                 f"{NOT_MEASURED} (the costs above were measured on {device})"])
    return rows


def overhead(doc: dict[str, Any]) -> dict[str, str]:
    o, d, setup = doc["overhead"], doc["overhead"]["decomposition"], doc["setup"]
    n = d["n_trials"]
    trial_total = sum(d["trial"].values()) / n
    trial_rows = [[k, f"{v / n * 1000:.1f}", f"{d['trial_calls'].get(k, 0) / n:.1f}",
                   f"{v / n / trial_total:.1%}"]
                  for k, v in sorted(d["trial"].items(), key=lambda kv: -kv[1])]
    trial_rows.append(["**total per trial**", f"**{trial_total * 1000:.1f}**", "", ""])
    session_rows = [[k, f"{v * 1000:.1f}"]
                    for k, v in sorted(d["session"].items(), key=lambda kv: -kv[1])]
    session_rows.append(["**total per session**", f"**{d['session_fixed'] * 1000:.1f}**"])
    store_calls = sum(c for k, c in d["trial_calls"].items()
                      if k.startswith(("MLflow", "Optuna: storage"))) / n
    return {
        "widths": ", ".join(map(str, o["widths"])), "epochs": str(o["epochs"]),
        "dataset": o["dataset"], "n_train": str(o["n_train"]), "n_val": str(o["n_val"]),
        "lr": f"{setup['lr']:g}", "batch_size": str(setup["batch_size"]),
        "weight_decay": f"{setup['weight_decay']:g}", "penalty_mode": setup["penalty_mode"],
        "device": doc["machine"]["device"], "val_diff": f"{o['val_loss_max_abs_diff']:.1e}",
        "variants_table": table(
            ["variant", "wall time, median (min, max, n)", "ratio to bare"],
            [[k, spread(o["times"][k]), f"{o['median'][k] / o['median']['bare']:.3f}"]
             for k in ("service", "instrumented", "trainer", "bare")]),
        "pair_ratio": f"{o['pair_ratio_median']:.3f}",
        "n_runs": str(d["n_runs"]), "wall": f"{d['wall']:.2f}",
        "trial_table": table(["inside each trial", "ms per trial", "calls per trial",
                              "share of the trial"], trial_rows),
        "session_table": table(["once per session", "ms"], session_rows),
        "background": ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in d["background"].items())
        or "none",
        "per_trial_ms": f"{d['per_trial_overhead'] * 1000:.0f}",
        "per_epoch_ms": f"{d['per_epoch'] * 1000:.1f}",
        "per_trial_fixed_ms": f"{d['per_trial_fixed'] * 1000:.0f}",
        "session_ms": f"{d['session_fixed'] * 1000:.0f}", "floor_note": floor_note(doc),
        "init_fraction": f"{d.get('init_epoch_fraction', 0.0):.3f}",
        "bare_trial_ms": f"{d['bare_per_trial'] * 1000:.0f}",
        "prediction_table": table(["case", "training per trial T", "epochs E", "trials N",
                                   "overhead ratio", "kind"], _prediction_rows(doc)),
        "store_calls": f"{store_calls:.0f}", "trainer_ratio": f"{o['trainer_ratio']:.3f}",
    }


def _stage_tables(doc: dict[str, Any]) -> str:
    a = doc["analysis"]
    blocks = []
    for kind in (a["primary"], "journal"):
        for command, st in a.get(kind, {}).get("stages", {}).items():
            rows = [[k, f"{v:.3f}", f"{v / st['total']:.1%}"]
                    for k, v in sorted(st.items(), key=lambda kv: -kv[1]) if k != "total"]
            blocks.append(f"Where one `study {command}` call on the {kind} storage spends its "
                          f"time ({st['total']:.2f} s; exclusive time of each stage):\n\n"
                          + table(["stage", "s", "share"], rows))
    return "\n\n".join(blocks) or f"Stages: not timed ({doc['run']['plan']['name']} run)."


def analysis(doc: dict[str, Any]) -> dict[str, str]:
    a = doc["analysis"]
    j = a[a["primary"]]
    rows = []
    for kind in (a["primary"], "journal"):
        if kind not in a:
            continue
        t = a[kind]["times"]
        rows.append([kind, f"{a[kind]['build_seconds']:.1f} s", spread(t["table"], digits=2),
                     spread(t["table_orm"], digits=2) if "table_orm" in t else "-",
                     spread(t["analysis"], digits=2),
                     spread(t["report"], digits=2) if "report" in t else "not run"])
    return {
        "n_synthetic": f"{a['n']:,}",
        "states": ", ".join(f"{v / a['n']:.0%} {k}" for k, v in a["states"].items()),
        "generate_seconds": f"{a['generate_seconds']:.1f}",
        "storage_table": table(["storage", "build (not timed)", "table alone: open + "
                                "`trial_table`", "the same through Optuna's ORM reader",
                                "`study analyze` (`analyze_study`)",
                                "`study report` (`report_study`)"], rows),
        "evaluators": ", ".join(a["evaluators"]), "n_bootstrap": str(a["n_bootstrap"]),
        "max_trials": str(a["importance_max_trials"]), "stage_tables": _stage_tables(doc),
        "rows": f"{j['rows']:,}", "orm_seconds": f"{j['median']['table_orm']:.2f}",
        "speedup": f"{j['median']['table_orm'] / j['median']['table']:.1f}",
    }


def pruning(doc: dict[str, Any]) -> dict[str, str]:
    p = doc["pruning"]
    study, summary = p["study"], p["summary"]
    rows = []
    for row in p["per_seed"]:
        for pruner in p["pruners"]:
            x = row[pruner]
            rows.append([row["seed"], pruner, x["epochs"], x["n_pruned"], x["n_failed"],
                         _fmt(x["best"], ".4f"), f"{x['seconds']:.1f} s",
                         _fmt(x.get("saving"), ".3f"), _fmt(x.get("best_ratio"), ".3f")])
        x = row["replay"]
        rows.append([row["seed"], "median rule replayed on the unpruned trials", x["epochs"],
                     "", "", _fmt(x["best"], ".4f"), "", f"{x['saving']:.3f}",
                     _fmt(x["best_ratio"], ".3f")])
    names = [k for k in summary if k != "replay"] + ["replay"]
    summary_rows = [[k if k != "replay" else "median rule replayed on the unpruned trials",
                     f"{summary[k]['saving']:.3f}", _fmt(summary[k]["best_ratio"], ".3f"),
                     _fmt(summary[k].get("time_ratio"), ".3f")] for k in names]
    hb = summary.get("hyperband")
    return {
        "n_trials": str(p["n_trials"]), "width_range": "-".join(map(str, study["width"])),
        "lr_range": "-".join(f"{v:g}" for v in study["lr"]),
        "batch_sizes": "/".join(map(str, study["batch_sizes"])),
        "wd_range": "-".join(f"{v:g}" for v in study["weight_decay"]),
        "epochs": str(study["epochs"]), "sampler": study["sampler"].upper(),
        "seed_table": table(["seed", "pruner", "epochs", "pruned trials", "failed",
                             "best val loss", "wall", "saving", "best ratio"], rows),
        "pruner_table": table(["median over seeds", "saving", "best ratio", "wall time ratio"],
                              summary_rows),
        "seed_ratios": ", ".join(_fmt(row["median"]["best_ratio"], ".2f")
                                 for row in p["per_seed"]),
        "replay_saving": f"{summary['replay']['saving']:.3f}",
        "replay_best": _fmt(summary["replay"]["best_ratio"], ".3f"),
        "rank_corr": _fmt(summary["replay"]["rank_corr"], ".2f"),
        "n_startup": str(study["n_startup_trials"]), "early_epochs": str(study["early_epochs"]),
        "cap": f"{p['cap']:.2f}",
        "cap_share": f"{summary['median']['saving'] / p['cap']:.0%}" if p["cap"] else "-",
        "hyperband": (f"measured above, saving {hb['saving']:.2f} at best ratio "
                      f"{_fmt(hb['best_ratio'], '.3f')}" if hb else "not run in this mode"),
    }


def data_path(doc: dict[str, Any]) -> dict[str, str]:
    dp = doc["data_path"]
    device, batch, m = dp["device"], dp["batch_size"], dp["median"]
    rows = [[device, "device tensors", spread(dp["rates"]["tensors"], "samples/s", 0)],
            [device, "DataLoader", spread(dp["rates"]["dataloader"], "samples/s", 0)],
            [_other_device(device), "both", NOT_MEASURED]]
    note = (f"On {_other_device(device)}, **{PREDICTION}**: the step takes a fraction of the "
            f"time it takes here and each DataLoader batch is also copied from host memory, so "
            f"the gap between the two paths should grow there."
            if not device.startswith("cuda") else
            "The DataLoader batches include their host-to-device copies (pinned memory).")
    return {
        "width": str(dp["width"]), "batch_size": str(batch), "epochs": str(dp["epochs"]),
        "pinned": ", pinned memory" if dp["pinned"] else "",
        "rates_table": table(["device", "path", "samples/s, median (min, max, n)"], rows),
        "ratio": f"{dp['ratio']:.2f}", "pair_ratio": f"{dp['pair_ratio_median']:.2f}",
        "extra_ms": f"{(1 / m['dataloader'] - 1 / m['tensors']) * batch * 1e3:+.2f}",
        "step_ms": f"{batch / m['tensors'] * 1e3:.1f}", "device": device, "gpu_note": note,
    }


def owner_shares(d: dict[str, Any]) -> dict[str, float]:
    """Seconds of a service session by owner: training, MLflow, Optuna, the rest."""
    owners: dict[str, float] = defaultdict(float)
    for part in (d["trial"], d["session"]):
        for key, value in part.items():
            owner = (key.split(":", 1)[0] if key.startswith(("training", "MLflow", "Optuna"))
                     else "Python glue (Objective, session, progress)")
            owners[owner] += value
    return dict(sorted(owners.items(), key=lambda kv: -kv[1]))


def profile(doc: dict[str, Any]) -> dict[str, str]:
    prof, d = doc["profile"], doc["overhead"]["decomposition"]
    total = prof["python_total"]
    return {
        "width": str(prof["width"]), "epochs": str(prof["epochs"]),
        "torch_wall": f"{prof['torch_wall']:.2f}", "py_wall": f"{prof['py_wall']:.2f}",
        "owner_table": table(
            [f"owner (instrumented session, {d['n_trials']} trials, {d['wall']:.2f} s)", "s",
             "share"],
            [[k, f"{v:.3f}", f"{v / d['wall']:.1%}"] for k, v in owner_shares(d).items()]),
        "ops_table": table(["operator", "calls", "self CPU ms", "share of all ops"],
                           [[f"`{op['name']}`", op["calls"], f"{op['self_ms']:.1f}",
                             f"{op['share']:.1%}"] for op in prof["ops"]]),
        "frames_table": table(
            ["function", "where", "package", "calls", "self ms", "share"],
            [[f"`{t['function']}`", t["where"], t["package"], t["calls"],
              f"{t['self_ms']:.1f}", f"{t['share']:.1%}"] for t in prof["top"]]),
        "packages_table": table(["package", "self ms", "share"],
                                [[k, f"{v * 1000:.0f}", f"{v / total:.1%}"]
                                 for k, v in prof["packages"].items() if v / total >= 0.005]),
        "cumulative_table": table(
            ["stage", "ms", "share of the session"],
            [[k, f"{v * 1000:.0f}", f"{v / prof['py_wall']:.1%}"]
             for k, v in sorted(prof["cumulative"].items(), key=lambda kv: -kv[1])]),
    }


def method(doc: dict[str, Any]) -> dict[str, str]:
    return {"template_seconds": f"{doc['run']['template_seconds']:.1f}"}


def init_cost(doc: dict[str, Any]) -> dict[str, str]:
    c = doc["init_cost"]
    rows = [[width, spread(v["times"]["init"]), spread(v["times"]["epoch"]),
             f"{v['ratio']:.3f}"] for width, v in c["per_width"].items()]
    return {"samples": str(c["samples"]), "n_train": str(c["n_train"]),
            "batch_size": str(c["batch_size"]), "device": c["device"],
            "cost_table": table(["width", "loss at initialization", "one epoch", "ratio"],
                                rows),
            "ratio": f"{c['ratio']:.3f}"}


def coverage(doc: dict[str, Any]) -> dict[str, str]:
    from bench.coverage import replicate_lines, table_lines

    cov = doc["coverage"]
    low, high = cov["nominal"]
    return {"studies": str(cov["studies_per_scenario"]), "nominal": f"{low:.0%}-{high:.0%}",
            "coverage_table": "\n".join(table_lines(cov)),
            "replicate_table": "\n".join(replicate_lines(cov))}


def real_replicates(doc: dict[str, Any]) -> dict[str, str]:
    from bench.real_replicates import table_lines

    rep = doc["real_replicates"]
    return {"studies": str(rep["studies"]), "trials": str(rep["trials"]),
            "last_seed": str(rep["studies"] - 1),
            "replicate_table": "\n".join(table_lines(rep))}
