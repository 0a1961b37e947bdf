"""The ``study`` console script, run in a child forked from a process that imported PyTorch,
MLflow, Optuna and the commands once.

A fresh interpreter spends about 4 s of CPU importing them before it parses a flag; the tests
run the CLI about 85 times, so most of that time went to imports. Each call here is
still its own process with the given working directory, environment, argv and output
streams, running :func:`study.cli.main` and the process's exit handlers as the console script
does; only the imports are shared. The server is Python's ``forkserver``: it imports before it
serves anything and never runs a test, so a child inherits no connection, thread or store of
the test process.

What the shared imports cannot show (what a command imports at start-up, a signal's handling
by a fresh interpreter, ``mlflow run``) is tested through real subprocesses elsewhere
(``tests/test_layering.py``, ``tests/runtime_tests/test_recovery.py``,
``tests/test_mlproject_e2e.py``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Imported once by the server; what a command imports later is imported by its child.
PRELOAD = ["torch", "mlflow", "optuna", "sqlalchemy", "study.cli", "study.runtime.session",
           "study.analysis.command", "study.report.command", "study.doctor.command",
           "tests._forked_cli"]

_context = multiprocessing.get_context("forkserver")
_start_lock = threading.Lock()
# A child's exit code is read once from its status pipe, by whichever thread polls first, and
# Process.start() polls every live child of the process: two threads polling one child at once
# leave one of them at EOF, which multiprocessing reports as exit code 255. Every poll and
# start holds this lock (the tests run CLI calls from several threads).
_poll_lock = threading.Lock()
_started = False


def _ensure_server(env: dict[str, str]) -> None:
    """Start this process's fork server once, with ``env`` (the tests' base environment: a
    test's own settings at that moment must not reach the imports every child shares)."""
    global _started
    with _start_lock:
        if _started:
            return
        _context.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _started = True


def _child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The child: the console script's process state, then ``study.cli.main``."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv
    for path, fd in ((out, 1), (err, 2)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    from study.cli import main

    code = 1
    try:
        code = main(argv[1:])
    finally:
        atexit._run_exitfuncs()  # the forkserver's child leaves through os._exit
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def run_forked(args: list[str], *, cwd: Path, env: dict[str, str], exe: Path,
               timeout: float, server_env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``study args`` in a forked child; the result of :func:`subprocess.run` with
    ``capture_output=True, text=True`` (``TimeoutExpired`` after ``timeout`` seconds, the child
    killed). ``server_env``: the environment the fork server starts with, on the first call."""
    _ensure_server(server_env)
    argv = [str(exe), *args]
    with tempfile.TemporaryDirectory(prefix="study-cli-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        child = _context.Process(target=_child, args=(argv, str(cwd), dict(env), out, err))
        with _poll_lock:
            child.start()
        try:
            multiprocessing.connection.wait([child.sentinel], timeout)
        finally:  # past the timeout, or the test interrupted: no child outlives the call
            with _poll_lock:
                running = child.exitcode is None
                if running:
                    child.kill()
            if running:
                multiprocessing.connection.wait([child.sentinel])
                with _poll_lock:
                    child.join()
        if running:
            raise subprocess.TimeoutExpired(argv, timeout, output=_read(out), stderr=_read(err))
        return subprocess.CompletedProcess(argv, child.exitcode, _read(out), _read(err))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
