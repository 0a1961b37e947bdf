"""One trial through the service, profiled twice: torch.profiler for the operators, cProfile for
the Python frames (self time by function and package, inclusive time of the trial's stages).

(Named ``profiling`` so that ``bench/`` never shadows the standard library's ``profile``, which
``cProfile`` imports.)
"""

from __future__ import annotations

import cProfile
import inspect
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness import EPOCHS, Workspace
from bench.overhead import prepare_service, run_service


def _package(filename: str, function: str) -> str:
    path = filename.replace("\\", "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/study/" in path and "/bench/" not in path:
        return "study"
    if filename == "~":
        for name in ("torch", "sqlite3", "optuna", "sqlalchemy"):
            if name in function:
                return f"{name} (C)"
        return "builtins (C)"
    if "/lib/python" in path:
        return "stdlib"
    return "other"


def _stage_keys() -> dict[tuple[str, int, str], str]:
    """cProfile's key (file, first line, name) of each stage's function, from its code object
    (so a moved function is still found). ``_open_session`` is a private name of
    study/runtime/session.py."""
    from study.runtime import objective, session
    from study.training.trainer import Trainer

    stages = {
        "Objective.__call__ (the whole trial)": objective.Objective.__call__,
        "train_logged (training + MLflow logging)": objective.train_logged,
        "Trainer.fit (incl. its epoch callbacks)": Trainer.fit,
        "_open_session (stores, parent run)": session._open_session,
    }
    keys = {}
    for label, function in stages.items():
        code = inspect.unwrap(function).__code__
        keys[(code.co_filename, code.co_firstlineno, code.co_name)] = label
    return keys


def _torch_profile(ws: Workspace, data: Any, device: Any, width: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    config = prepare_service(ws, [width], str(device), "profile-torch")
    with profile(activities=activities) as prof:
        wall, _ = run_service(config, data)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [{"name": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000,
            "share": e.self_cpu_time_total / total_self} for e in events[:12]]
    return {"torch_wall": wall, "ops": ops}


def _python_profile(ws: Workspace, data: Any, device: Any, width: int) -> dict[str, Any]:
    config = prepare_service(ws, [width], str(device), "profile-python")
    profiler = cProfile.Profile()
    profiler.enable()
    wall, _ = run_service(config, data)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    frames = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [{"where": (f"{Path(f).name}:{line}" if f != "~" else ""), "function": fn,
            "package": _package(f, fn), "calls": v[1], "self_ms": v[2] * 1000,
            "share": v[2] / total} for (f, line, fn), v in frames]
    packages: dict[str, float] = defaultdict(float)
    for (f, _, fn), v in stats.items():
        packages[_package(f, fn)] += v[2]
    stage_keys = _stage_keys()
    cumulative = {stage_keys[key]: v[3] for key, v in stats.items() if key in stage_keys}
    return {"py_wall": wall, "top": top, "python_total": total, "cumulative": cumulative,
            "packages": dict(sorted(packages.items(), key=lambda kv: -kv[1]))}


def bench_profile(ws: Workspace, data: Any, device: Any, width: int = 16) -> dict[str, Any]:
    """One trial through the service under torch.profiler, then under cProfile."""
    return {"width": width, "epochs": EPOCHS, **_torch_profile(ws, data, device, width),
            **_python_profile(ws, data, device, width)}
