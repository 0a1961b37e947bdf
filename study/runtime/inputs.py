"""The study's inputs, checked before anything is created: the data (with progress while a
large image folder decodes) and a user's model factory (built, run once, its source hashed)."""

from __future__ import annotations

import dataclasses
import sys
from typing import TextIO

import optuna

from study._choices import search_spec
from study._validation import fail
from study.config import StudyConfig
from study.keys import MODEL_SHA_ATTR, MODEL_SHA_TAG
from study.redact import redact
from study.tracking import Tracker
from study.training import TensorData, check_model, factory_defaults, is_factory, load_dataset

__all__ = ["CheckedInputs", "check_batch_sizes", "check_factory", "check_inputs", "load_data",
           "record_model_source"]


@dataclasses.dataclass(frozen=True)
class CheckedInputs:
    """A session's data, loaded and checked, and its model factory's source hash (if any)."""

    data: TensorData
    model_sha: str | None


def check_inputs(config: StudyConfig, data: TensorData | None, *, device: object,
                 out: TextIO, batch_field: str) -> CheckedInputs:
    """Load the data (unless given) and check the batch sizes and a model factory against it.

    Raises:
        StudyError: One of them is bad (nothing has been created).
    """
    if data is None:
        data = load_data(config, device=device, out=out)
    check_batch_sizes(config, data, field=batch_field)
    return CheckedInputs(data, check_factory(config, data))


def load_data(config: StudyConfig, *, device: object, out: TextIO | None = None) -> TensorData:
    """Load the config's dataset onto ``device``; a large image folder reports its decoding."""
    stream = out if out is not None else sys.stderr

    def progress(done: int, total: int) -> None:
        print(f"decoding {config.dataset}: {done}/{total} images", file=stream, flush=True)

    return load_dataset(config.dataset, seed=config.seed, device=device,  # type: ignore[arg-type]
                        image_size=config.image_size, progress=progress)


def check_batch_sizes(config: StudyConfig, data: TensorData, *,
                      field: str = "batch_sizes") -> None:
    """Refuse a batch size larger than the training split (it would silently train
    full-batch, one step per epoch, and compare as if it were the size asked for).

    Raises:
        ConfigError: One line naming ``field``, the size and the split's size.
    """
    too_large = [b for b in config.batch_sizes if b > data.n_train]
    if too_large:
        value = too_large[0] if field == "batch_size" else ",".join(map(str, config.batch_sizes))
        fail(field, value, f"<= the {data.n_train} training samples of "
                           f"{redact(config.dataset)}")


def check_factory(config: StudyConfig, data: TensorData, *,
                  widths: tuple[int, ...] | None = None) -> str | None:
    """Check a factory model once at the study's smallest and largest width (built-in models
    need no check) and return its source hash.

    Raises:
        ConfigError: One line naming the factory and what went wrong.
    """
    if not is_factory(config.model):
        return None
    widths = widths if widths is not None else (config.width_min, config.width_max)
    sha256 = check_model(config.model, widths=widths, data=data, depth=config.depth,
                         dropout=_other_than(config.dropout, 0.0),
                         bn_momentum=_other_than(config.bn_momentum, 0.1)).sha256
    _say_replaced_defaults(config)
    return sha256


def _say_replaced_defaults(config: StudyConfig, out: TextIO | None = None) -> None:
    """One warning per option whose value replaces a different default the factory declares
    (``build(..., dropout=0.3)`` run without ``--dropout`` trains with 0.0, the flag's)."""
    for field, own in factory_defaults(config.model).items():
        kind, value = search_spec(getattr(config, field))
        if kind != "fixed" or not isinstance(own, int | float) or float(own) == float(value):
            continue
        flag = f"--{field.replace('_', '-')}"
        print(f"warning: {config.model} declares {field}={own!r} but is built with "
              f"{field}={float(value):g}, the value of {flag}; pass {flag} {own} to build it "
              f"with its own.", file=out if out is not None else sys.stderr, flush=True)


def _other_than(values: tuple[str, ...], default: float) -> float:
    """A value of a searched option other than its ``default`` when it has one (the factory
    must then accept the option), else the default."""
    kind, value = search_spec(values)
    candidates = [value] if kind == "fixed" else list(value)
    return next((float(v) for v in candidates if float(v) != default), default)


def record_model_source(study: optuna.Study, tracker: Tracker, parent_run_id: str, *,
                        spec: str, sha256: str | None, out: TextIO | None = None) -> None:
    """Keep the factory's source hash with a new study and on the parent run; when a resumed
    study's factory has changed since it was created, say so (its trials then mix models)."""
    if sha256 is None:
        return
    stored = study.user_attrs.get(MODEL_SHA_ATTR)
    if stored is None:
        study.set_user_attr(MODEL_SHA_ATTR, sha256)
    elif stored != sha256:
        print(f"warning: model factory {spec!r} "
              f"changed since study {study.study_name!r} was created (source sha256 "
              f"{stored[:12]} -> {sha256[:12]}); its trials before and after train different "
              f"models.", file=out if out is not None else sys.stderr, flush=True)
    tracker.set_tags(parent_run_id, {MODEL_SHA_TAG: sha256})
