"""The cluster launchers in deploy/: Kubernetes manifests pass kubernetes-validate (strict), the
Slurm array script passes shellcheck, and the commands both run parse with the real CLI."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
SBATCH = DEPLOY / "slurm" / "workers.sbatch"


def _documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kind(kind: str) -> list[dict]:
    return [doc for doc in _documents() if doc["kind"] == kind]


def _parses_as_study_command(argv: list[str]) -> None:
    from study.cli import cli

    assert argv[0] == "study"
    command = cli.commands[argv[1]]
    command.make_context(argv[1], list(argv[2:]))  # raises click.UsageError if it does not


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_pass_kubernetes_validate_strictly(path):
    import kubernetes_validate

    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def test_workers_are_an_indexed_job_of_study_worker_pods_with_one_gpu_each():
    (job,) = _kind("Job")
    assert job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    _parses_as_study_command(container["command"])
    assert container["command"][:2] == ["study", "worker"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STUDY_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "study-stores"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"


def test_the_tracking_server_is_a_deployment_and_a_service_on_port_5000():
    (deployment,) = _kind("Deployment")
    (service,) = _kind("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 5000
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow", "server"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "study-stores"


def test_the_tracking_servers_database_url_is_on_no_command_line():
    """Found by a user: a shell's "$MLFLOW_BACKEND_STORE_URI" put the password on the server's
    command line (`ps` on the node); `mlflow server` reads the variable itself."""
    (deployment,) = _kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = [*container["command"], *container.get("args", [])]
    assert not any("MLFLOW_BACKEND_STORE_URI" in a or "backend-store-uri" in a for a in argv)
    assert container["env"][0]["name"] == "MLFLOW_BACKEND_STORE_URI"
    assert "--host" in argv and "--allowed-hosts" in argv


def test_the_tracking_server_is_recreated_not_rolled_over_its_volume():
    (deployment,) = _kind("Deployment")
    (claim,) = _kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_every_volume_the_manifests_mount_is_claimed_by_them():
    """Found by a first user: the tracking server mounted a claim no file created."""
    claimed = {doc["metadata"]["name"] for doc in _kind("PersistentVolumeClaim")}
    mounted = {volume["persistentVolumeClaim"]["claimName"]
               for doc in _kind("Deployment") + _kind("Job")
               for volume in doc["spec"]["template"]["spec"].get("volumes", [])
               if "persistentVolumeClaim" in volume}
    assert mounted and mounted <= claimed


def test_no_manifest_holds_a_password():
    for document in _documents():
        text = yaml.safe_dump(document)
        for url in re.findall(r"postgresql://[^\s'\"]+", text):
            assert "CHANGE-ME" in url, url  # only the example Secret's placeholder


def _sbatch_command() -> list[str]:
    text = SBATCH.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("exec study worker")]
    values = {"STUDY_NAME": "cnn-width"}
    line = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], line)
    return shlex.split(line)[1:]


def test_the_slurm_array_runs_study_worker_on_one_gpu_per_task():
    text = SBATCH.read_text()
    assert re.search(r"^#SBATCH --array=\d+-\d+$", text, re.M)
    assert re.search(r"^#SBATCH --gres=gpu:1$", text, re.M)
    argv = _sbatch_command()
    assert argv[:2] == ["study", "worker"]
    _parses_as_study_command(argv)


def test_the_slurm_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("shellcheck is required on CI (Debian package `shellcheck`)")
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(["shellcheck", str(SBATCH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
