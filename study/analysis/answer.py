"""The answer in words: one paragraph per study that names the total, data and penalty parts
of both questions with their 95% intervals, signs shown as signs, and the weight decay at
which bigger models start higher."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ADAPTIVE_SAMPLERS", "design_note", "paragraph", "weight_decay_text"]

# Samplers that place trials where the objective is good, so the sample depends on outcomes.
ADAPTIVE_SAMPLERS = {"tpe": "TPE", "gp": "Gaussian-process"}
_QUESTIONS = {
    "init": "Does a bigger model start higher? At initialization (before the first update)",
    "early": "Is its first epoch higher? Over the early window (the mean loss Keras reports)",
}


def weight_decay_text(value: float | None) -> str:
    """A weight decay as ``3.2e-04``."""
    return "?" if value is None else f"{value:.1e}"


def paragraph(blocks: Mapping[str, Mapping[str, Any]], *, early_epochs: int,
              design: Mapping[str, Any]) -> str:
    """The verdict text: both questions, their thresholds, and the design note."""
    sentences = []
    for question in ("init", "early"):
        block = blocks.get(question)
        if not block:
            continue
        intro = _QUESTIONS[question]
        if question == "early":
            epochs = "epoch" if early_epochs == 1 else f"{early_epochs} epochs"
            intro = intro.replace("the early window", f"the first {epochs}")
        sentences.append(f"{intro}, {_where(block)}: {_parts(block.get('decomposition'))}.")
        verdict = block.get("verdict") or {}
        sentences.append(f"Verdict: {verdict.get('code', 'inconclusive')}; "
                         f"{verdict.get('why', '')}.")
        threshold = _threshold(block.get("threshold") or {}, question)
        if threshold:
            sentences.append(threshold)
    if design.get("note"):
        sentences.append(str(design["note"]))
    return " ".join(" ".join(sentences).split())


def design_note(sampler: str | None) -> str | None:
    """What an adaptive sampler means for the answer, and what to run instead."""
    name = ADAPTIVE_SAMPLERS.get(str(sampler))
    if name is None:
        return None
    return (f"The {name} sampler placed trials where the objective was good, so which sizes "
            f"were tried depends on the outcomes; for an answer free of that, run a "
            f"space-filling design (`study run --sampler qmc` or `random`) or the controlled "
            f"experiment `study explain`.")


# -- parts ------------------------------------------------------------------------------------
def _where(block: Mapping[str, Any]) -> str:
    ref = block.get("reference") or {}
    bits = []
    if ref.get("penalty_mode"):
        bits.append(str(ref["penalty_mode"]))
    if ref.get("weight_decay") is not None:
        bits.append(f"weight decay {weight_decay_text(ref['weight_decay'])}")
    if block.get("question") == "early" and ref.get("lr") is not None:
        bits.append(f"lr {weight_decay_text(ref['lr'])}")
    if ref.get("batch_size") is not None:
        bits.append(f"batch size {ref['batch_size']:.3g}")
    sizes = ref.get("n_params") or [None, None]
    if None not in sizes:
        bits.append(f"{_count(sizes[0])} to {_count(sizes[1])} parameters")
    bits.append(f"{block.get('n_trials_used', 0)} trials")
    return ", ".join(bits)


def _parts(decomposition: Mapping[str, Any] | None) -> str:
    if not decomposition or not decomposition.get("width_effect_total"):
        return "no size effect could be estimated"
    effects = {k: decomposition[f"width_effect_{k}"] for k in ("total", "data", "penalty")}
    fmt = _formatter([v for e in effects.values() for v in (e["estimate"], *e["ci95"])])
    penalty = effects["penalty"]
    if penalty["estimate"] == 0 and penalty["ci95"] == [0.0, 0.0]:
        pen = "L2 penalty part 0 (no penalty in the reported loss)"
    else:
        pen = f"L2 penalty part {_with_ci(penalty, fmt)}"
    return (f"the total loss changes {_with_ci(effects['total'], fmt)} per decade of "
            f"parameters = data part {_with_ci(effects['data'], fmt)} + {pen}")


def _with_ci(effect: Mapping[str, Any], fmt: Any) -> str:
    lo, hi = effect["ci95"]
    return f"{fmt(effect['estimate'])} (95% CI {fmt(lo)} to {fmt(hi)})"


def _threshold(block: Mapping[str, Any], question: str) -> str | None:
    status = block.get("status")
    studied = block.get("studied_range") or [None, None]
    span = f"{weight_decay_text(studied[0])} to {weight_decay_text(studied[1])}"
    if studied[0] is not None and studied[0] == studied[1]:
        span = f"weight decay {weight_decay_text(studied[0])}"
    if status in ("inside", "outside"):
        where = ("within the studied" if status == "inside" else "outside the studied")
        if studied[0] == studied[1]:
            where = "beside the study's fixed"
        text = (f"Bigger models start higher once the weight decay exceeds "
                f"{weight_decay_text(block['estimate'])} ({_ci_text(block['ci95'])}), "
                f"{where} {span}")
        if question == "init":
            return text + "; at initialization this holds at any weight decay, which changes " \
                          "only the penalty's factor."
        return text + ("." if status == "inside" else f"; {block.get('basis')}.")
    unsure = "" if block.get("significant", True) else \
        ", though its 95% CI includes no change at some of them"
    if status == "always":
        if unsure:
            return f"The estimated total rises at every weight decay studied ({span}){unsure}."
        return f"The total rises at every weight decay studied ({span})."
    if status == "never":
        text = f"At no weight decay studied ({span}) does the {'estimated ' * bool(unsure)}" \
               f"total rise{unsure}"
        if block.get("extrapolated"):
            text += (f"; if the data part stayed as at {weight_decay_text(studied[1])}, it "
                     f"would from about {weight_decay_text(block['extrapolated'])} "
                     f"(extrapolated)")
        return text + "."
    return None


def _ci_text(ci: Any) -> str:
    lo, hi = ci if ci else (None, None)
    if lo is None and hi is None:
        return "95% CI: any weight decay"
    if lo is None:
        return f"95% CI up to {weight_decay_text(hi)}"
    if hi is None:
        return f"95% CI from {weight_decay_text(lo)} up"
    return f"95% CI {weight_decay_text(lo)} to {weight_decay_text(hi)}"


def _formatter(values: list[float]) -> Any:
    """Signed fixed decimals for one sentence: two significant digits of its largest number,
    more (up to four) where an interval is narrower; a number that would print as zero keeps
    two significant digits."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    scale = max((abs(v) for v in finite), default=0.0)
    decimals = 2 if scale <= 0 else min(4, max(2, 1 - math.floor(math.log10(scale))))
    halves = [abs(b - a) / 2 for a, b in zip(finite[1::3], finite[2::3], strict=False)]
    narrow = min((h for h in halves if h > 0), default=0.0)
    if narrow > 0:
        decimals = max(decimals, min(4, -math.floor(math.log10(narrow))))

    def fmt(value: float) -> str:
        if value != 0 and abs(value) < 0.5 * 10**-decimals:
            return f"{value:+.2g}"
        text = f"{value:+.{decimals}f}"
        return text.replace("-", "+", 1) if float(text) == 0 else text

    return fmt


def _count(n: float) -> str:
    for limit, unit in ((1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.3g}{unit}"
    return f"{n:.0f}"

