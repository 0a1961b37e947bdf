"""Dead-worker detection from the stamp a trial keeps: real processes, a real reused PID
situation (a live PID whose process started at another time than the stamped one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from study.runtime.recovery import dead_here, worker_stamp
from tests.servers import stamp_of_an_exited_process

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"),
                                reason="process start times are read from /proc (Linux)")


def test_the_stamp_is_host_pid_and_start():
    host, pid, start = worker_stamp().split(":")
    assert host == socket.gethostname() and pid == str(os.getpid())
    boot, ticks = start.split("-")
    assert len(boot) == 8 and ticks.isdigit()


def test_this_process_is_alive():
    assert dead_here(worker_stamp()) is False


def test_an_exited_worker_is_dead():
    assert dead_here(stamp_of_an_exited_process()) is True


def test_a_reused_pid_is_still_recognised_as_dead():
    dead = stamp_of_an_exited_process()
    host, _, start = dead.split(":")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            # The live process now holds a PID under which the dead worker's stamp is read,
            # exactly what the OS does when it hands the worker's PID to a new process.
            reused = f"{host}:{alive.pid}:{start}"
            assert dead_here(reused) is True
            assert dead_here(f"{host}:{alive.pid}") is False  # an old-style stamp: PID only
        finally:
            alive.kill()


def test_other_hosts_and_malformed_stamps_are_not_judged():
    assert dead_here("other-machine:1:abc-1") is False
    assert dead_here("no-colon") is False
    assert dead_here(None) is False
    assert dead_here(f"{socket.gethostname()}:notapid:x") is False
