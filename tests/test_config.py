"""Tests of study.config (validation, coercion, files, resolution, resume) and study.mlproject."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from study.config import (
    StudyConfig,
    check_no_conflict,
    coerce_values,
    config_from_stored,
    load_config_file,
    resolve_config,
)
from study.errors import ConfigError
from study.mlproject import strip_defaults
from tests.conftest import REPO

DEFAULTS = StudyConfig()


def _make(**changes):
    return dataclasses.replace(DEFAULTS, **changes)


# --- field validation: names, URLs, choices ------------------------------------------------------


def test_defaults_are_valid():
    assert StudyConfig().epochs == 3


@pytest.mark.parametrize("name", ["", "   "])
def test_study_name_must_not_be_empty(name):
    with pytest.raises(ConfigError, match=r"`study_name` must be a non-empty name"):
        _make(study_name=name)


def test_study_name_with_one_character_is_accepted():
    assert _make(study_name="s").study_name == "s"


def test_storage_is_checked():
    with pytest.raises(ConfigError, match=r"`storage` must be .*storage='notaurl'"):
        _make(storage="notaurl")


def test_storage_journal_is_accepted():
    assert _make(storage="journal:/tmp/x.log").storage == "journal:/tmp/x.log"


@pytest.mark.parametrize("name", ["", "  "])
def test_experiment_must_not_be_empty(name):
    with pytest.raises(ConfigError, match=r"`experiment` must be a non-empty name"):
        _make(experiment=name)


def test_dataset_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`dataset` must be .*dataset='foo'"):
        _make(dataset="foo")


@pytest.mark.parametrize("spec", ["digits", "volumes3d", "npz:/not/checked/yet.npz"])
def test_dataset_known_forms_are_accepted(spec):
    assert _make(dataset=spec).dataset == spec


def test_model_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`model` must be one of cnn, vgg, resnet, "
                                          r"resnet-noskip, or a factory .*model='resnet50'"):
        _make(model="resnet50")


@pytest.mark.parametrize("model", ["vgg", "resnet", "resnet-noskip", "pkg.nets:build",
                                   "nets/mine.py:build", "examples/question_cnn.py:Net.build"])
def test_model_known_forms_and_factories_are_accepted(model):
    assert _make(model=model).model == model


@pytest.mark.parametrize("model", ["pkg.nets:", "nets/mine.txt/x:build", "my net:build", ":b"])
def test_malformed_factory_is_rejected_without_importing(model):
    with pytest.raises(ConfigError, match=r"`model` must be one of .* or a factory "
                                          r"pkg.module:callable or path/to/file.py:callable"):
        _make(model=model)


def test_depth_is_stored_for_resnets_and_coerced_from_mlproject_text():
    config = StudyConfig().replace(model="resnet", depth="3.0")
    assert config.depth == 3
    assert config.study_settings()["depth"] == 3


def test_depth_without_a_resnet_is_rejected():
    with pytest.raises(ConfigError, match=r"`depth` must be unset for model='cnn'.*depth=3"):
        _make(depth=3)


@pytest.mark.parametrize("depth", [0, -2])
def test_depth_below_one_is_rejected(depth):
    with pytest.raises(ConfigError, match=r"`depth` must be an integer >= 1"):
        _make(model="resnet", depth=depth)


def test_image_size_needs_an_image_folder():
    with pytest.raises(ConfigError, match=r"`image_size` must be unset for dataset='digits'"):
        _make(image_size="32")
    assert _make(dataset="imagefolder:/x", image_size="50x55").image_size == "50x55"


def test_init_unknown_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`init` must be one of torch, glorot, he.*init='xavier'"):
        _make(init="xavier")


def test_init_he_is_accepted():
    assert _make(init="he").init == "he"


def test_penalty_mode_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`penalty_mode` must be one of .*penalty_mode='l2'"):
        _make(penalty_mode=("l2",))


def test_penalty_mode_empty_is_rejected():
    with pytest.raises(ConfigError, match=r"`penalty_mode` must be at least one mode"):
        _make(penalty_mode=())


def test_penalty_mode_repeated_is_rejected():
    with pytest.raises(ConfigError, match=r"without repeats.*penalty_mode='none,none'"):
        _make(penalty_mode=("none", "none"))


def test_penalty_mode_unknown_among_known_is_rejected():
    with pytest.raises(ConfigError, match=r"penalty_mode='bogus'"):
        _make(penalty_mode=("coupled", "bogus"))


def test_penalty_mode_several_modes_are_accepted():
    modes = ("l2-in-loss", "coupled", "decoupled", "none")
    assert _make(penalty_mode=modes).penalty_mode == modes


def test_objective_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`objective` must be one of .*objective='loss'"):
        _make(objective="loss")


@pytest.mark.parametrize("objective", ["val_loss", "val_error", "early_loss"])
def test_objective_known_is_accepted(objective):
    assert _make(objective=objective).objective == objective


def test_sampler_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`sampler` must be one of tpe, random, gp.*'cmaes'"):
        _make(sampler="cmaes")


def test_sampler_random_is_accepted():
    assert _make(sampler="random").sampler == "random"


def test_sampler_qmc_is_a_scrambled_sobol_sequence_with_the_study_seed():
    import optuna

    from study.runtime.lifecycle import make_sampler

    config = _make(sampler="qmc", seed=3)
    sampler = make_sampler(config, n_existing=7, salt=11)
    assert isinstance(sampler, optuna.samplers.QMCSampler)
    assert sampler._seed == 3 and sampler._scramble  # the same sequence in every session


def test_pruner_unknown_is_rejected():
    with pytest.raises(ConfigError, match=r"`pruner` must be one of .*pruner='asha'"):
        _make(pruner="asha")


def test_pruner_none_is_accepted():
    assert _make(pruner="none").pruner == "none"


def test_device_gpu_is_rejected():
    with pytest.raises(ConfigError, match=r"`device` must be one of .*cuda:N.*device='gpu'"):
        _make(device="gpu")


@pytest.mark.parametrize("device", ["cuda:", "cuda:x", "CPU"])
def test_device_malformed_is_rejected(device):
    with pytest.raises(ConfigError, match=r"`device` must be"):
        _make(device=device)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_syntax_is_accepted_without_probing_hardware(device):
    assert _make(device=device).device == device


# --- field validation: numbers (both sides of every boundary) ------------------------------------


def test_epochs_zero_is_rejected():
    with pytest.raises(ConfigError, match=r"`epochs` must be > 0, but got epochs=0\."):
        _make(epochs=0, early_epochs=1)


def test_epochs_one_is_accepted():
    assert _make(epochs=1, early_epochs=1).epochs == 1


def test_early_epochs_zero_is_rejected():
    with pytest.raises(ConfigError, match=r"`early_epochs` must be > 0, but got early_epochs=0\."):
        _make(early_epochs=0)


def test_early_epochs_above_epochs_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`early_epochs` must be <= epochs \(3\).*early_epochs=4"):
        _make(epochs=3, early_epochs=4)


def test_early_epochs_equal_to_epochs_is_accepted():
    assert _make(epochs=3, early_epochs=3).early_epochs == 3


def test_width_min_zero_is_rejected():
    with pytest.raises(ConfigError, match=r"`width_min` must be > 0, but got width_min=0\."):
        _make(width_min=0)


def test_width_min_one_is_accepted():
    assert _make(width_min=1).width_min == 1


def test_width_min_above_width_max_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`width_min` must be <= `width_max`, but got width_min=9 and "
                             r"width_max=8\."):
        _make(width_min=9, width_max=8)


def test_width_min_equal_to_width_max_is_accepted():
    assert _make(width_min=8, width_max=8).width_max == 8


@pytest.mark.parametrize("value", [-1.0, 0.0])
def test_lr_min_not_positive_is_rejected(value):
    with pytest.raises(ConfigError, match=rf"`lr_min` must be > 0, but got lr_min={value!r}\."):
        _make(lr_min=value)


def test_lr_min_tiny_positive_is_accepted():
    assert _make(lr_min=1e-12).lr_min == 1e-12


def test_lr_min_above_lr_max_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`lr_min` must be <= `lr_max`, but got lr_min=0.1 and lr_max=0.01\."):
        _make(lr_min=0.1, lr_max=0.01)


def test_lr_min_equal_to_lr_max_is_accepted():
    assert _make(lr_min=0.01, lr_max=0.01).lr_min == 0.01


def test_lr_nan_is_rejected():
    with pytest.raises(ConfigError, match=r"`lr_min` must be > 0, but got lr_min=nan"):
        _make(lr_min=float("nan"))


def test_batch_sizes_empty_is_rejected():
    with pytest.raises(ConfigError, match=r"`batch_sizes` must be at least one batch size"):
        _make(batch_sizes=())


def test_batch_sizes_one_is_rejected():
    with pytest.raises(ConfigError, match=r"`batch_sizes` must be >= 2, but got batch_sizes=1\."):
        _make(batch_sizes=(32, 1))


def test_batch_sizes_two_is_accepted():
    assert _make(batch_sizes=(2,)).batch_sizes == (2,)


def test_weight_decay_min_negative_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`weight_decay_min` must be >= 0, but got weight_decay_min=-1e-05\."):
        _make(weight_decay_min=-1e-5)


def test_weight_decay_min_zero_with_positive_max_is_rejected():
    with pytest.raises(ConfigError, match=r"`weight_decay_min` must be > 0 when weight decay is "
                                          r"searched on a log scale.*weight_decay_min=0"):
        _make(weight_decay_min=0.0, weight_decay_max=1e-2)


def test_weight_decay_both_zero_is_accepted():
    config = _make(weight_decay_min=0.0, weight_decay_max=0.0)
    assert (config.weight_decay_min, config.weight_decay_max) == (0.0, 0.0)


def test_weight_decay_min_above_max_is_rejected():
    with pytest.raises(ConfigError, match=r"`weight_decay_min` must be <= `weight_decay_max`"):
        _make(weight_decay_min=1e-2, weight_decay_max=1e-3)


def test_seed_negative_is_rejected():
    with pytest.raises(ConfigError, match=r"`seed` must be >= 0, but got seed=-1\."):
        _make(seed=-1)


def test_seed_zero_is_accepted():
    assert _make(seed=0).seed == 0


def test_n_trials_zero_is_rejected():
    with pytest.raises(ConfigError, match=r"`n_trials` must be > 0, but got n_trials=0\."):
        _make(n_trials=0)


def test_n_trials_one_is_accepted():
    assert _make(n_trials=1).n_trials == 1


@pytest.mark.parametrize("value", [0, "0", ""])
def test_timeout_zero_means_none(value):
    assert DEFAULTS.replace(timeout=value).timeout is None


def test_timeout_negative_is_rejected():
    with pytest.raises(ConfigError, match=r"`timeout` must be > 0, but got timeout=-1.0\."):
        DEFAULTS.replace(timeout=-1)


def test_timeout_small_positive_is_accepted():
    assert DEFAULTS.replace(timeout="0.5").timeout == 0.5


def test_heartbeat_interval_zero_is_rejected():
    with pytest.raises(ConfigError,
                       match=r"`heartbeat_interval` must be > 0, but got heartbeat_interval=0\."):
        _make(heartbeat_interval=0)


def test_heartbeat_interval_one_is_accepted():
    assert _make(heartbeat_interval=1).heartbeat_interval == 1


def test_replace_validates():
    with pytest.raises(ConfigError, match=r"epochs=0"):
        DEFAULTS.replace(epochs="0")


# --- coerce_values ------------------------------------------------------------------------------


def test_coerce_int_from_string():
    assert coerce_values({"epochs": "3"}) == {"epochs": 3}


@pytest.mark.parametrize("value", ["3.0", 3.0])
def test_coerce_int_from_integral_float(value):
    out = coerce_values({"epochs": value})
    assert out == {"epochs": 3}
    assert type(out["epochs"]) is int


@pytest.mark.parametrize("value", ["3.5", 3.5])
def test_coerce_int_rejects_fraction(value):
    with pytest.raises(ConfigError, match=r"`epochs` must be an integer, but got epochs="):
        coerce_values({"epochs": value})


def test_coerce_int_rejects_text_naming_the_field():
    with pytest.raises(ConfigError,
                       match=r"`width_min` must be an integer, but got width_min='abc'"):
        coerce_values({"width_min": "abc"})


@pytest.mark.parametrize("value", [True, False])
def test_coerce_int_rejects_bool(value):
    with pytest.raises(ConfigError, match=rf"`seed` must be an integer, but got seed={value}"):
        coerce_values({"seed": value})


def test_coerce_float_rejects_bool():
    with pytest.raises(ConfigError, match=r"`lr_min` must be a number, but got lr_min=True"):
        coerce_values({"lr_min": True})


def test_coerce_float_rejects_text():
    with pytest.raises(ConfigError, match=r"`lr_max` must be a number, but got lr_max='abc'"):
        coerce_values({"lr_max": "abc"})


def test_coerce_float_from_string():
    assert coerce_values({"lr_min": "1e-4"}) == {"lr_min": 1e-4}


def test_coerce_batch_sizes_from_comma_list():
    assert coerce_values({"batch_sizes": "32,64"}) == {"batch_sizes": (32, 64)}


def test_coerce_batch_sizes_from_list():
    assert coerce_values({"batch_sizes": [16]}) == {"batch_sizes": (16,)}


def test_coerce_batch_sizes_bad_item_names_the_field():
    with pytest.raises(ConfigError, match=r"`batch_sizes` must be an integer.*'x'"):
        coerce_values({"batch_sizes": "32,x"})


def test_coerce_penalty_mode_from_comma_list():
    assert coerce_values({"penalty_mode": "l2-in-loss,none"}) == {
        "penalty_mode": ("l2-in-loss", "none")
    }


def test_coerce_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown setting `widht`; allowed: .*batch_sizes.*"
                                          r"width_max.*width_min"):
        coerce_values({"widht": 8})


def test_coerce_accepts_hyphenated_keys():
    assert coerce_values({"lr-min": "0.001", "n-trials": "5"}) == {"lr_min": 0.001, "n_trials": 5}


def test_coerce_empty_tracking_uri_is_none():
    assert coerce_values({"tracking_uri": ""}) == {"tracking_uri": None}


# --- config files -------------------------------------------------------------------------------


def test_load_toml(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('epochs = 2\nbatch_sizes = [16, 32]\npenalty_mode = "none"\n')
    assert load_config_file(path) == {"epochs": 2, "batch_sizes": (16, 32),
                                      "penalty_mode": ("none",)}


def test_load_toml_study_table(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[study]\nepochs = 2\nlr-min = 0.001\n")
    assert load_config_file(path) == {"epochs": 2, "lr_min": 0.001}


def test_load_toml_study_table_next_to_other_keys_is_not_unwrapped(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("epochs = 2\n[study]\nseed = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting `study`"):
        load_config_file(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_load_yaml(tmp_path, suffix):
    path = tmp_path / f"study{suffix}"
    path.write_text("epochs: 2\nbatch_sizes: [16, 32]\nweight_decay_min: 0.0001\n")
    assert load_config_file(path) == {"epochs": 2, "batch_sizes": (16, 32),
                                      "weight_decay_min": 1e-4}


def test_load_yaml_empty_file_is_no_settings(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("")
    assert load_config_file(path) == {}


@pytest.mark.parametrize(("name", "text"), [
    ("bad.toml", "epochs = \n[[[\n"),
    ("bad.yaml", "epochs: [2\nseed: {\n"),
])
def test_load_unparsable_file_is_one_line_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"`config` could not be parsed") as info:
        load_config_file(path)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"`config` must be an existing TOML or YAML file.*nope"):
        load_config_file(tmp_path / "nope.toml")


def test_load_directory_is_rejected(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match=r"`config` must be an existing TOML or YAML file"):
        load_config_file(tmp_path / "dir.toml")


def test_load_wrong_suffix_names_the_allowed_suffixes(tmp_path):
    path = tmp_path / "study.json"
    path.write_text('{"epochs": 2}')
    with pytest.raises(ConfigError,
                       match=r"^`config` must be a file ending in .toml, .yaml or .yml, but got"):
        load_config_file(path)


def test_load_top_level_list_is_rejected(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("- epochs\n- 2\n")
    with pytest.raises(ConfigError, match=r"`config` must be a mapping of settings at the top"):
        load_config_file(path)


def test_load_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown setting `learning_rate`; allowed: "):
        load_config_file(path)


# --- resolve_config -----------------------------------------------------------------------------


def test_resolve_defaults_without_input():
    config, given = resolve_config(explicit={})
    assert config == DEFAULTS
    assert given == {}


def test_resolve_flags_override_file(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("epochs = 2\n")
    config, _ = resolve_config(explicit={"epochs": 5}, config_file=path)
    assert config.epochs == 5


def test_resolve_file_overrides_defaults(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("epochs = 2\nlr_min = 0.001\n")
    config, _ = resolve_config(explicit={"epochs": 5}, config_file=path)
    assert (config.lr_min, config.lr_max) == (0.001, DEFAULTS.lr_max)


def test_resolve_given_holds_exactly_the_explicit_keys(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("epochs = 2\nlr_min = 0.001\n")
    _, given = resolve_config(explicit={"epochs": "5", "seed": 1}, config_file=path)
    assert given == {"epochs": 5, "lr_min": 0.001, "seed": 1}


def test_resolve_given_counts_a_value_equal_to_the_default():
    _, given = resolve_config(explicit={"epochs": 3})
    assert given == {"epochs": 3}


def test_resolve_starts_from_base():
    base = _make(epochs=7, early_epochs=2)
    config, _ = resolve_config(explicit={"seed": 4}, base=base)
    assert (config.epochs, config.early_epochs, config.seed) == (7, 2, 4)


def test_resolve_validates_the_result():
    with pytest.raises(ConfigError, match=r"lr_min=0.1 and lr_max=0.01"):
        resolve_config(explicit={"lr_min": "0.1", "lr_max": "0.01"})


# --- derived views ------------------------------------------------------------------------------


def test_fixed_dimensions_of_equal_width_bounds():
    assert _make(width_min=8, width_max=8).fixed_dimensions["width"] == 8


def test_fixed_dimensions_of_one_batch_size():
    assert _make(batch_sizes=(64,)).fixed_dimensions["batch_size"] == 64


def test_fixed_dimensions_of_one_penalty_mode():
    assert _make(penalty_mode=("coupled",)).fixed_dimensions["penalty_mode"] == "coupled"


def test_fixed_dimensions_of_equal_lr_and_weight_decay_bounds():
    fixed = _make(lr_min=1e-3, lr_max=1e-3, weight_decay_min=0.0,
                  weight_decay_max=0.0).fixed_dimensions
    assert (fixed["lr"], fixed["weight_decay"]) == (1e-3, 0.0)


def test_fixed_dimensions_leave_searched_ones_out():
    fixed = _make(penalty_mode=("coupled", "none")).fixed_dimensions
    assert fixed == {"optimizer": "adam", "momentum": 0.9, "dropout": 0.0, "bn_momentum": 0.1}


def test_searched_training_options_are_not_fixed():
    config = _make(optimizer=("adam", "sgd"), momentum=("0.5:0.99",), dropout=("0", "0.3"),
                   bn_momentum=("keras", "pytorch"))
    assert not {"optimizer", "momentum", "dropout", "bn_momentum"} & set(config.fixed_dimensions)


def test_to_params_flattens_tuples():
    params = DEFAULTS.to_params()
    assert params["batch_sizes"] == "32,64,128"
    assert params["penalty_mode"] == "l2-in-loss"


def test_to_params_omits_none():
    params = DEFAULTS.to_params()
    assert "timeout" not in params
    assert "tracking_uri" not in params


def test_to_params_are_strings():
    assert all(isinstance(v, str) for v in DEFAULTS.to_params().values())


def test_study_settings_hold_only_study_fields():
    settings = DEFAULTS.study_settings()
    assert set(settings) == set(StudyConfig.field_names("study"))
    assert not set(settings) & {"n_trials", "device", "storage", "study_name", "timeout"}


# --- resume: stored config vs this session ------------------------------------------------------


def test_check_no_conflict_names_field_and_both_values():
    with pytest.raises(ConfigError, match=r"`epochs` conflicts with study 's': it was created "
                                          r"with epochs=3, but got epochs=5"):
        check_no_conflict(DEFAULTS, {"epochs": 5}, study_name="s")


def test_check_no_conflict_names_the_flags_on_the_command_line(monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with pytest.raises(ConfigError, match=r"; drop the flag or use a new --study-name\.$"):
        check_no_conflict(DEFAULTS, {"epochs": 5}, study_name="s")


def test_check_no_conflict_names_the_project_parameters_under_mlflow_run(monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123abcd")
    with pytest.raises(ConfigError, match=r"; drop -P epochs or set a new -P study_name=NAME\.$"):
        check_no_conflict(DEFAULTS, {"epochs": 5}, study_name="s")


def test_check_no_conflict_shows_lists_comma_joined():
    with pytest.raises(ConfigError, match=r"batch_sizes='32,64,128', but got batch_sizes='16'"):
        check_no_conflict(DEFAULTS, {"batch_sizes": (16,)}, study_name="s")


def test_check_no_conflict_allows_equal_values():
    assert check_no_conflict(DEFAULTS, {"epochs": 3, "batch_sizes": (32, 64, 128)},
                             study_name="s") is None


def test_check_no_conflict_allows_session_fields_to_differ():
    given = {"n_trials": 99, "device": "cpu", "timeout": 10.0, "heartbeat_interval": 5,
             "storage": "journal:/tmp/other.log"}
    assert check_no_conflict(DEFAULTS, given, study_name="s") is None


def test_config_from_stored_keeps_stored_study_fields():
    stored = _make(epochs=5, batch_sizes=(16,), penalty_mode=("none", "coupled")).study_settings()
    session = _make(epochs=2, early_epochs=1)
    config = config_from_stored(stored, session)
    assert (config.epochs, config.batch_sizes, config.penalty_mode) == (
        5, (16,), ("none", "coupled"))


def test_config_from_stored_takes_session_fields_from_the_session():
    stored = _make(epochs=5).study_settings()
    session = _make(n_trials=7, device="cpu", study_name="other", timeout=30.0)
    config = config_from_stored(stored, session)
    assert (config.n_trials, config.device, config.study_name, config.timeout) == (
        7, "cpu", "other", 30.0)


def test_config_from_stored_ignores_unknown_stored_keys():
    stored = {**DEFAULTS.study_settings(), "from_a_newer_version": 1}
    assert config_from_stored(stored, DEFAULTS) == DEFAULTS


def test_config_from_stored_rejects_an_invalid_stored_value():
    stored = {**DEFAULTS.study_settings(), "epochs": "many"}
    with pytest.raises(ConfigError, match=r"`epochs` must be an integer"):
        config_from_stored(stored, DEFAULTS)


# --- study.mlproject.strip_defaults -------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--epochs", "3"],
    ["--epochs", "3.0"],
    ["--lr-min", "0.0001"],
    ["--lr-min", "1e-4"],
    ["--batch-sizes", "32,64,128"],
    ["--weight-decay-min", "1e-05"],
    ["--timeout", "0"],
    ["--penalty-mode", "l2-in-loss"],
])
def test_strip_defaults_drops_default_values(argv):
    assert strip_defaults(argv) == []


@pytest.mark.parametrize("argv", [
    ["--epochs", "4"],
    ["--lr-min", "0.001"],
    ["--batch-sizes", "32,64"],
    ["--penalty-mode", "l2-in-loss,none"],
])
def test_strip_defaults_keeps_non_default_values(argv):
    assert strip_defaults(argv) == argv


def test_strip_defaults_keeps_unknown_flags():
    assert strip_defaults(["--width", "16", "--epochs", "3"]) == ["--width", "16"]


def test_strip_defaults_keeps_an_invalid_value_for_the_cli_to_report():
    assert strip_defaults(["--epochs", "abc"]) == ["--epochs", "abc"]


def test_strip_defaults_keeps_order_of_mixed_arguments():
    argv = ["--seed", "0", "--seed", "1", "--dataset", "digits", "--model", "vgg"]
    assert strip_defaults(argv) == ["--seed", "1", "--model", "vgg"]


def test_strip_defaults_drops_empty_values_and_keeps_what_it_is_told():
    argv = ["--study-name", "", "--epochs", "3", "--lr", "0.01"]
    assert strip_defaults(argv) == ["--lr", "0.01"]
    assert strip_defaults(argv, keep=("epochs",)) == ["--epochs", "3", "--lr", "0.01"]


# --- the MLproject file and the CLI never drift -------------------------------------------------


@pytest.fixture(scope="module")
def entry_points():
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_mlproject_has_the_spec_entry_points(entry_points):
    assert {"main", "study", "trial", "analyze", "report", "worker", "explain", "doctor"} <= \
        set(entry_points)


@pytest.mark.parametrize("entry", ["main", "study", "trial", "analyze", "report", "worker",
                                   "doctor"])
def test_mlproject_defaults_equal_config_defaults(entry_points, entry):
    params = entry_points[entry]["parameters"]
    fields = [name for name in params if name in StudyConfig.field_names()]
    assert fields  # the check below must not pass vacuously
    drifted = {
        name: (params[name]["default"], getattr(DEFAULTS, name))
        for name in fields
        # MLflow passes str(default) on the command line.
        if coerce_values({name: str(params[name]["default"])})[name] != getattr(DEFAULTS, name)
    }
    assert drifted == {}


@pytest.mark.parametrize("entry", ["trial", "doctor"])
def test_mlproject_fixed_defaults_equal_cli_defaults(entry_points, entry):
    from study.cli import cli

    cli_defaults = {p.name: p.default for p in cli.commands[entry].params}
    params = entry_points[entry]["parameters"]
    own = {name: params[name]["default"] for name in ("width", "lr", "batch_size", "weight_decay")}
    assert own == {name: cli_defaults[name] for name in own}


def test_mlproject_doctor_parameters_are_the_cli_flags(entry_points):
    from study.cli import cli

    flags = {p.name for p in cli.commands["doctor"].params}
    assert set(entry_points["doctor"]["parameters"]) <= flags
    assert entry_points["doctor"]["parameters"]["output_dir"]["default"] == \
        next(p.default for p in cli.commands["doctor"].params if p.name == "output_dir")


def test_mlproject_explain_defaults_equal_cli_explain_defaults(entry_points):
    from study.cli import explain_command

    cli_defaults = {p.name: p.default for p in explain_command.params}
    params = entry_points["explain"]["parameters"]
    own = ("lr", "batch_size", "weight_decay", "n_widths", "replicates")
    assert {n: params[n]["default"] for n in own} == {n: cli_defaults[n] for n in own}
    assert params["epochs"]["default"] == ""  # each question has its own default
    for name in ("width_min", "width_max", "penalty_mode", "dataset", "seed"):
        assert coerce_values({name: str(params[name]["default"])})[name] == \
            getattr(DEFAULTS, name)


@pytest.mark.parametrize("entry", ["main", "study", "trial", "analyze", "report", "worker",
                                   "explain", "doctor"])
def test_mlproject_placeholders_are_the_declared_parameters(entry_points, entry):
    spec = entry_points[entry]
    placeholders = re.findall(r"\{(\w+)\}", spec["command"])
    assert sorted(placeholders) == sorted(spec["parameters"])


@pytest.mark.parametrize("entry", ["study", "trial", "explain"])
def test_mlproject_placeholders_follow_their_own_flag(entry_points, entry):
    command = entry_points[entry]["command"]
    pairs = re.findall(r"--([\w-]+) \{(\w+)\}", command)
    assert len(pairs) == len(entry_points[entry]["parameters"])
    assert [flag for flag, _ in pairs] == [name.replace("_", "-") for _, name in pairs]


@pytest.mark.parametrize("entry", ["study", "trial", "explain"])
def test_mlproject_flags_are_cli_options(entry_points, entry):
    from study.cli import explain_command, run_command, trial_command

    command = {"study": run_command, "trial": trial_command, "explain": explain_command}[entry]
    options = {opt for p in command.params for opt in p.opts}
    flags = re.findall(r"(--[\w-]+) \{", entry_points[entry]["command"])
    assert [f for f in flags if f not in options] == []


# --- training options: optimizer, momentum, dropout, BatchNorm momentum --------------------------

def _given(**explicit):
    return resolve_config(explicit=explicit)[0]


@pytest.mark.parametrize(("field", "value"), [
    ("momentum", "0"), ("momentum", "0.999"), ("dropout", "0"), ("dropout", "0.95"),
    ("bn_momentum", "1"), ("bn_momentum", "1e-6")])
def test_training_options_accept_their_bounds(field, value):
    assert getattr(_given(**{field: value}), field) == (repr(float(value)),)


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("momentum", "1", r"in \[0, 1\)"), ("momentum", "-0.01", r"in \[0, 1\)"),
    ("dropout", "1", r"in \[0, 1\)"), ("bn_momentum", "0", r"in \(0, 1\]"),
    ("bn_momentum", "1.5", r"in \(0, 1\]"), ("bn_momentum", "tensorflow", "a number, or keras"),
    ("momentum", "0.9:0.5", "LO < HI"), ("bn_momentum", "0.01:0.1", "no range"),
    ("dropout", "0.1,0.1", "without repeats")])
def test_training_options_refuse_values_outside_them(field, value, allowed):
    with pytest.raises(ConfigError, match=rf"^`{field}` must be .*{allowed}.*but got {field}="):
        _given(**{field: value})


def test_bn_momentum_names_mean_the_two_conventions():
    assert _given(bn_momentum="keras,pytorch").bn_momentum == ("0.01", "0.1")


def test_the_same_values_spelled_differently_make_the_same_config():
    assert _given(momentum="0.90", bn_momentum="keras") == \
        _given(momentum="0.9", bn_momentum="0.01")


def test_optimizers_are_a_searched_list():
    assert _given(optimizer="SGD,adamw").optimizer == ("sgd", "adamw")
    with pytest.raises(ConfigError, match=r"^`optimizer` must be one of adam, sgd, adamw"):
        _given(optimizer="rmsprop")


@pytest.mark.parametrize(("optimizer", "mode"), [("sgd", "decoupled"), ("adamw", "coupled")])
def test_an_optimizer_and_a_penalty_mode_it_cannot_apply_are_refused(optimizer, mode):
    with pytest.raises(ConfigError, match=rf"with optimizer='{optimizer}', but got "
                                          rf"penalty_mode='{mode}'"):
        _given(optimizer=f"adam,{optimizer}", penalty_mode=f"l2-in-loss,{mode}")


def test_training_options_of_one_setting_are_single_values():
    config = _given(optimizer="sgd", momentum="0.5", dropout="0.25", bn_momentum="keras")
    assert config.training_options() == {"optimizer": "sgd", "momentum": 0.5, "dropout": 0.25,
                                         "bn_momentum": 0.01}
    with pytest.raises(ConfigError,
                       match=r"^`momentum` must be a single value for one configuration"):
        _given(momentum="0.5:0.9").training_options()
