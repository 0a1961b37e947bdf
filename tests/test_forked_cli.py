"""The tests' fast way to run ``study`` (:mod:`tests._forked_cli`) answers as the real console
script in a new interpreter does."""

from __future__ import annotations

import multiprocessing
import subprocess
import time

import pytest

from tests.conftest import cli_env, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--help"],
    ["run", "--lr-min", "-1"],  # a domain error: one line, exit 1
    ["run", "--bogus"],  # a usage error: exit 2
    ["run", "--dataset", "npz:missing.npz", "--storage", "sqlite:///optuna.db"],
])
def test_a_forked_command_answers_as_the_console_script_does(tmp_path, args):
    fresh = run_cli(args, cwd=tmp_path, env=cli_env(), fresh=True)
    forked = run_cli(args, cwd=tmp_path, env=cli_env())
    assert (forked.returncode, forked.stdout, forked.stderr) == \
        (fresh.returncode, fresh.stdout, fresh.stderr)
    assert list(tmp_path.iterdir()) == []  # neither left a store behind


@pytest.mark.slow
def test_a_forked_command_past_its_timeout_is_stopped(tmp_path, tracking_uri):
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(["run", "--n-trials", "50", "--epochs", "50", "--device", "cpu"],
                cwd=tmp_path, env=cli_env(tracking_uri), timeout=3)
    assert time.monotonic() - start < 30
    assert multiprocessing.active_children() == []  # the child was killed, not left training
