"""The answer in words. First one line per question, read at a glance: its code, then one
plain sentence (``At initialization: penalty. Bigger models start higher ...``). Then the
detail: a paragraph that names the total, data and penalty parts of both questions with their
95% intervals, signs shown as signs, and the weight decay at which bigger models start
higher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study._text import as_sentence, interval_formatter
from study.analysis.verdict import MIN_TRIALS, SMALL_SHARE, number_text

__all__ = ["ADAPTIVE_SAMPLERS", "NOT_ASKED", "design_note", "headline", "paragraph",
           "weight_decay_text", "where_text"]

# Samplers that place trials where the objective is good, so the sample depends on outcomes.
ADAPTIVE_SAMPLERS = {"tpe": "TPE", "gp": "Gaussian-process"}
_QUESTIONS = {
    "init": "At initialization (before the first update)",
    "early": "Over the early window (the mean loss Keras reports)",
}


# A shortfall of the trials under this (decades of parameters) is not worth a sentence.
_NEGLIGIBLE_SHORTFALL = 0.1
_LABELS = {"init": "At initialization", "early": "Over the first epoch"}
# A study of one model size: the size question has no answer to give, not an open one.
NOT_ASKED = "not-asked"
_CODE_WORDS = {"no-increase": "no increase", NOT_ASKED: "not asked"}


def headline(block: Mapping[str, Any], *, early_epochs: int = 1) -> str:
    """The question's line: ``{label}: {code}. {one plain sentence}``."""
    question = str(block.get("question", "early"))
    label = _LABELS[question]
    if question == "early" and early_epochs != 1:
        label = f"Over the first {early_epochs} epochs"
    verdict = block.get("verdict") or {}
    code = str(verdict.get("code", "inconclusive"))
    return f"{label}: {_CODE_WORDS.get(code, code)}. {_plain(block, code)}"


def _plain(block: Mapping[str, Any], code: str) -> str:
    decomposition = block.get("decomposition") or {}
    if (block.get("verdict") or {}).get("one_size"):
        return as_sentence(block["verdict"]["why"])
    if not decomposition.get("width_effect_total") or \
            int(block.get("n_trials_used") or 0) < MIN_TRIALS:
        return f"Cannot tell yet: {(block.get('verdict') or {}).get('why', 'no size effect')}."
    t, d, p = (decomposition[f"width_effect_{k}"] for k in ("total", "data", "penalty"))
    fmt = interval_formatter([v for e in (t, d, p) for v in (e["estimate"], *e["ci95"])],
                             significant=3)  # the detail's number_text: the same numbers
    start = "start" if block.get("question") == "init" else "are"
    span = _span_text(block.get("reference") or {})
    share = decomposition.get("penalty_share") or {}
    data = f"data part {_bracket(d, fmt)}"
    if code in ("penalty", "optimization", "both"):
        rise = f"Bigger models {start} higher ({_bracket(t, fmt)} per decade{span})"
        if code == "penalty":
            carried = _share_text(share) or "most of it"
            # One parenthesis at a time: "98% of it (95% CI ...); data part ..."
            joined = f"; {data}" if carried.endswith(")") else f" ({data})"
            return f"{rise} and the L2 penalty carries {carried}{joined}."
        if code == "optimization":
            return (f"{rise} because they fit the data worse ({data}); the L2 penalty adds "
                    f"{fmt(p['estimate'])}.")
        return (f"{rise}; the L2 penalty ({_bracket(p, fmt)}) and the data ({_bracket(d, fmt)}) "
                f"both carry it.")
    if code == "no-increase":
        # The data part falls with size: before any update that is a lower start, not a fit.
        faster = ("" if d["ci95"][1] >= 0 else ": their data loss starts lower"
                  if block.get("question") == "init" else ": they fit the data faster")
        if t["ci95"][1] < 0:
            said = f"Bigger models {start} lower"
        else:  # the interval allows a rise, one too small to matter: say that, not "lower"
            tolerance = (block.get("verdict") or {}).get("tolerance")
            # Written as the verdict's text writes it: one threshold, one number on the page.
            below = (f"; a rise under {number_text(tolerance)}, 1% of the loss, is negligible"
                     if tolerance is not None else "")
            said = (f"Bigger models {start} lower or negligibly higher" if t["estimate"] < 0
                    else f"Bigger models {start} at most negligibly higher")
            span = f"{span}{below}"
        text = (f"{said} ({_bracket(t, fmt)} per decade{span}){faster}; "
                f"the L2 penalty adds {fmt(p['estimate'])}.")
        return text + _would(block.get("threshold") or {},
                              "start" if block.get("question") == "init" else "be")
    why = str((block.get("verdict") or {}).get("why", ""))
    if t["ci95"][0] <= 0:  # the total itself is unsettled
        more = why.split("; ", 1)[1].split(", if ")[0] if "; " in why else ""
        where = f" ({span.lstrip(', ')})" if span else ""
        verb = "start" if block.get("question") == "init" else "be"
        return (f"Cannot tell yet whether bigger models {start} higher{where}: "
                f"{_bracket(t, fmt)} per decade holds both a fall and a rise"
                + (f"; {more}." if more else ".")
                + _would(block.get("threshold") or {}, verb))
    return f"Bigger models {start} higher ({_bracket(t, fmt)} per decade{span}); {why}."


def _bracket(effect: Mapping[str, Any], fmt: Any) -> str:
    lo, hi = effect["ci95"]
    return f"{fmt(effect['estimate'])} [{fmt(lo)}, {fmt(hi)}]"


def _span_text(ref: Mapping[str, Any]) -> str:
    widths, counts = ref.get("widths"), ref.get("n_params")
    if not widths or not counts or None in widths or None in counts:
        return ""
    # Interpolated between the trials' counts (fewer than 3 widths): said to be approximate.
    exact = (ref.get("span") or {}).get("exact_n_params") or (True, True)
    low, high = (("" if ok else "about ") + _count(n) for ok, n in zip(exact, counts, strict=True))
    return f", width {widths[0]:g} to {widths[1]:g}, {low} to {high} parameters"


def _share_text(share: Mapping[str, Any]) -> str | None:
    if share.get("estimate") is None:
        return None
    lo, hi = share.get("ci95") or (None, None)
    if lo is None or hi is None:
        return f"about {_percent(share['estimate'])} of it"
    if share["estimate"] >= 0.995 and lo >= 1 - SMALL_SHARE:
        return "all of it"
    return f"{_percent(share['estimate'])} of it (95% CI {_percent(lo)} to {_percent(hi)})"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _would(found: Mapping[str, Any], verb: str) -> str:
    """The threshold weight decay in the question's line, qualified as the paragraph's
    threshold sentence qualifies it (``verb`` ``start``: the initialization question)."""
    status, estimate = found.get("status"), found.get("estimate")
    # With its interval: a bare estimate read as settled beside an unsettled effect.
    ci = _ci_text(found.get("ci95"))
    if estimate and status == "inside":
        return (f" They would {verb} higher above weight decay {weight_decay_text(estimate)} "
                f"({ci}).")
    if estimate and status == "outside":
        # At initialization only the penalty's factor depends on the weight decay: exact.
        how = "exact at initialization" if verb == "start" else "extrapolated"
        return (f" They would {verb} higher above weight decay {weight_decay_text(estimate)} "
                f"({ci}; outside the weight decays studied; {how}).")
    extrapolated = found.get("extrapolated")
    if status == "never" and extrapolated:
        studied = (found.get("studied_range") or [None, None])[1]
        return (f" If the data part stayed as at weight decay {weight_decay_text(studied)}, "
                f"they would {verb} higher above about {weight_decay_text(extrapolated)} "
                f"(extrapolated).")
    return ""


def weight_decay_text(value: float | None) -> str:
    """A weight decay as ``3.2e-04``."""
    return "?" if value is None else f"{value:.1e}"


def paragraph(blocks: Mapping[str, Mapping[str, Any]], *, early_epochs: int,
              design: Mapping[str, Any]) -> str:
    """The verdict text: both questions, their thresholds, and the design note."""
    sentences = []
    said: set[str] = set()  # the reasons given: a second question with the same one refers back
    one_size = [(blocks.get(q) or {}).get("verdict", {}).get("one_size") for q in ("init", "early")]
    if all(one_size):
        why = blocks["early"]["verdict"]["why"]
        sentences.append(f"The size question is not asked here: {why}.")
    for question in ("init", "early"):
        block = blocks.get(question)
        if not block or all(one_size):
            continue
        intro = _QUESTIONS[question]
        if question == "early":
            epochs = "epoch" if early_epochs == 1 else f"{early_epochs} epochs"
            intro = intro.replace("the early window", f"the first {epochs}")
        sentences.append(f"{intro}, {where_text(block)}: "
                         f"{_parts(block.get('decomposition'))}.")
        estimated = bool((block.get("decomposition") or {}).get("width_effect_total"))
        reach = _reach(block.get("reference") or {}) if estimated else None
        if reach:
            sentences.append(reach)
        verdict = block.get("verdict") or {}
        why = str(verdict.get("why", ""))
        code = str(verdict.get("code", "inconclusive"))
        words = _CODE_WORDS.get(code, code).capitalize()
        sentences.append(f"{words}, for the same reason." if why and why in said
                         else f"{words}: {why}.")
        said.add(why)
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
            f"space-filling design (study run --sampler qmc, or random) or the controlled "
            f"experiment study explain.")


# -- parts ------------------------------------------------------------------------------------
def where_text(block: Mapping[str, Any]) -> str:
    """Where a question's effects are read: mode, weight decay, lr, batch size, the compared
    sizes and the trials (``l2-in-loss, weight decay 1.0e-02, ..., 12 trials``)."""
    ref = block.get("reference") or {}
    bits = []
    if ref.get("penalty_mode"):
        bits.append(str(ref["penalty_mode"]))
    if ref.get("weight_decay") is not None:
        bits.append(f"weight decay {weight_decay_text(ref['weight_decay'])}")
    if block.get("question") == "early" and ref.get("lr") is not None:
        bits.append(f"lr {weight_decay_text(ref['lr'])}")
    if ref.get("batch_size") is not None:
        size = float(ref["batch_size"])
        # The reference is the trials' geometric median: between two sizes when they split.
        between = "" if abs(size - round(size)) < 1e-6 else \
            " (the geometric middle of the sizes trained)"
        bits.append(f"batch size {size:.3g}{between}")
    span = _span_text(ref)
    if span:
        bits.append(span.lstrip(", "))
    bits.append(f"{block.get('n_trials_used', 0)} trials")
    return ", ".join(bits)


def _reach(ref: Mapping[str, Any]) -> str | None:
    """Where the trials fell short of the compared sizes, in words."""
    span = ref.get("span") or {}
    low, high = span.get("extrapolated") or (False, False)
    if not (low or high) or span.get("shortfall_decades", 0) < _NEGLIGIBLE_SHORTFALL:
        return None
    reached = span.get("reached_widths") or [None, None]
    decades = f"{span.get('shortfall_decades', 0):.2g}"
    return (f"The trials reached widths {reached[0]:g} to {reached[1]:g} only, so the effect "
            f"at the compared sizes is extrapolated over {decades} "
            f"decade{'' if decades == '1' else 's'} of parameters (its interval includes that).")


def _parts(decomposition: Mapping[str, Any] | None) -> str:
    if not decomposition or not decomposition.get("width_effect_total"):
        return "no size effect could be estimated"
    effects = {k: decomposition[f"width_effect_{k}"] for k in ("total", "data", "penalty")}
    fmt = interval_formatter([v for e in effects.values() for v in (e["estimate"], *e["ci95"])],
                             significant=3)
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
        # "start" is the initialization's word; over the early window they are higher.
        rise = "start higher" if question == "init" else "are higher"
        text = (f"Bigger models {rise} once the weight decay exceeds "
                f"{weight_decay_text(block['estimate'])} ({_ci_text(block['ci95'])}), "
                f"{where} {span}")
        if question == "init":
            return text + " (exact at initialization: weight decay changes only the " \
                          "penalty's factor)."
        return text + ("." if status == "inside" else f"; {block.get('basis')}.")
    single = studied[0] is not None and studied[0] == studied[1]
    where = f"at the weight decay studied ({span})" if single else \
        f"at every weight decay studied ({span})"
    unsure = "" if block.get("significant", True) else \
        (", though its 95% CI includes no change" if single
         else ", though its 95% CI includes no change at some of them")
    if status == "always":
        return f"The {'estimated ' * bool(unsure)}total rises {where}{unsure}."
    if status == "never":
        text = (f"The {'estimated ' * bool(unsure)}total does not rise "
                f"{where.replace('every', 'any')}{unsure}")
        if block.get("extrapolated"):
            text += (f"; if the data part stayed as at {weight_decay_text(studied[1])}, it "
                     f"would rise from about {weight_decay_text(block['extrapolated'])} "
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


def _count(n: float) -> str:
    for limit, unit in ((1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.3g}{unit}"
    return f"{n:.0f}"

