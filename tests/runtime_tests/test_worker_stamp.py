"""Dead-worker detection from the stamp a trial keeps: real processes, a real reused PID
situation (a live PID whose process started at another time than the stamped one). And the
identity a worker salts its sampler's seed with: real PID-1 processes in namespaces of their
own, as in containers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from study.runtime.recovery import dead_here, worker_identity, worker_salt, worker_stamp
from tests.servers import stamp_of_an_exited_process

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"),
                                reason="process start times are read from /proc (Linux)")


def test_the_stamp_is_host_pid_and_start():
    host, pid, start = worker_stamp().split(":")
    assert host == socket.gethostname() and pid == str(os.getpid())
    boot, ticks = start.split("-")
    assert len(boot) == 8 and ticks.isdigit()


def test_a_forked_child_stamps_itself_not_its_parent():
    parent = worker_stamp()  # read (and kept) in the parent before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its stamp and leave without running pytest's exit
        os.write(write, worker_stamp().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        stamp = pipe.read()
    os.waitpid(child, 0)

    assert stamp.split(":")[1] == str(child)
    assert stamp != parent and worker_stamp() == parent


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


def _as_pid_1(host: str, **env: str) -> tuple[str, int]:
    """``(identity, salt)`` of a real process that is PID 1 on host ``host``, as every worker
    of a Docker image or Kubernetes pod is."""
    code = ("from study.runtime.recovery import worker_identity, worker_salt; "
            "i = worker_identity(); print(i); print(worker_salt(i))")
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "sh", "-c",
         'hostname "$0" && exec "$@"', host, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    if proc.returncode != 0:
        reason = f"no PID namespace here (`unshare --pid` failed: {proc.stderr.strip()})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: this real-process test must run)")
        pytest.skip(reason)
    identity, salt = proc.stdout.split("\n")[:2]
    return identity, int(salt)


def test_workers_that_are_pid_1_on_different_hosts_get_different_salts():
    (a, salt_a), (b, salt_b) = _as_pid_1("worker-a"), _as_pid_1("worker-b")

    assert a.split(":")[:2] == ["worker-a", "1"] and b.split(":")[:2] == ["worker-b", "1"]
    assert salt_a != salt_b
    assert salt_a == worker_salt(a)  # what the worker records explains its salt


def test_the_scheduler_index_is_part_of_the_identity():
    identity, _ = _as_pid_1("pod", JOB_COMPLETION_INDEX="3", SLURM_PROCID="7")
    assert identity.split(" ")[1:] == ["JOB_COMPLETION_INDEX=3", "SLURM_PROCID=7"]
    # Same host, PID and start: only the index tells two workers apart.
    ours = [worker_identity({"JOB_COMPLETION_INDEX": str(i)}) for i in (0, 1)]
    assert ours[0].split(" ")[0] == ours[1].split(" ")[0] == worker_stamp()
    assert worker_salt(ours[0]) != worker_salt(ours[1])
    assert worker_salt(ours[0]) == worker_salt(worker_identity({"JOB_COMPLETION_INDEX": "0"}))
