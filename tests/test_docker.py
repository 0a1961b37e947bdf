"""The container recipe (docker/): parsed and checked against the real CLIs, never built or run.

Every command a compose service runs must exist with the flags it is given (``study`` commands
checked against :data:`study.cli.cli`, ``mlflow server`` against MLflow's own click command, in
a subprocess), and no credential may be baked into the Dockerfile, the compose file or the
init script: passwords only arrive through ``${POSTGRES_PASSWORD}`` interpolation.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_FILE = DOCKER / "compose.yaml"
INITDB = DOCKER / "initdb"

SECRET_WORD = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY", re.IGNORECASE)
# ${VAR}, ${VAR:?message} or ${VAR?message}: required from the environment, no default value.
REQUIRED_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}")
USERINFO_URL = re.compile(r"[a-z][a-z0-9+.-]*://([^/@\s]*)@", re.IGNORECASE)

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


# ------------------------------------------------------------------------------------ helpers
def interpolate(value: str) -> str:
    """Compose interpolation with every variable unset: ``${VAR:-default}`` gives the default,
    a required or plain variable a ``<VAR>`` placeholder, ``$$`` a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        return arg if op in (":-", "-") else f"<{name}>"

    value = value.replace("$$", "\0")
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, value)
    return value.replace("\0", "$")


def words(value: str | list[Any] | None) -> list[str]:
    """A compose ``command``/``entrypoint`` as argv, after interpolation."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(interpolate(value))
    return [interpolate(str(item)) for item in value]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def long_flags(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def scalars(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (key path, string) in a YAML tree, keys included."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            found.append((f"{path}.{key}", str(key)))
            found.extend(scalars(value, f"{path}.{key}"))
        return found
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in scalars(v, f"{path}[{i}]")]
    return [] if node is None else [(path, str(node))]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def dockerfile_args() -> dict[str, str]:
    """ARG defaults (the last declaration wins; no default gives an empty string)."""
    args = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG":
            for item in shlex.split(rest):
                name, _, default = item.partition("=")
                args[name] = default
    return args


def study_image_services() -> list[str]:
    """Services that run our image (built from docker/Dockerfile)."""
    return [name for name, svc in SERVICES.items()
            if str((svc.get("build") or {}).get("dockerfile", "")).endswith("Dockerfile")]


def effective_argv(name: str) -> list[str]:
    """entrypoint + command of a service running our image (ENTRYPOINT/CMD as defaults)."""
    service = SERVICES[name]
    image = {k: json.loads(v) for k, v in dockerfile_instructions() if k in ("ENTRYPOINT", "CMD")}
    entrypoint = words(service["entrypoint"]) if "entrypoint" in service else image["ENTRYPOINT"]
    command = words(service["command"]) if "command" in service else image["CMD"]
    return entrypoint + command


STUDY_SERVICES = [n for n in study_image_services() if effective_argv(n)[0] == "study"]


@pytest.fixture(scope="module")
def cli_commands() -> dict[str, Any]:
    from study.cli import cli

    return dict(cli.commands)


@pytest.fixture(scope="module")
def mlflow_server_options() -> dict[str, str | None]:
    """``mlflow server``'s options and their environment variables, asked of MLflow itself."""
    script = ("import json; from mlflow.cli import cli; print(json.dumps({o: p.envvar "
              "for p in cli.commands['server'].params for o in p.opts}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- compose: shape
def test_compose_has_the_cluster_services() -> None:
    assert {"postgres", "mlflow", "study", "worker"} <= set(SERVICES)
    assert set(STUDY_SERVICES) >= {"study", "worker"}


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_postgres_service() -> None:
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:16")
    env = environment(pg)
    assert env["POSTGRES_USER"] and "$" not in env["POSTGRES_USER"]
    assert env["POSTGRES_DB"] and "$" not in env["POSTGRES_DB"]
    assert REQUIRED_VAR.fullmatch(env["POSTGRES_PASSWORD"]), "the password must be required"
    assert "pg_isready" in " ".join(words(pg["healthcheck"]["test"]))
    mounts = [v for v in pg["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    assert mounts and (DOCKER / mounts[0].split(":")[0]).resolve() == INITDB.resolve()
    for port in pg.get("ports", []):
        interface = interpolate(str(port)).split(":")
        assert len(interface) == 3 and interface[0] == "127.0.0.1", \
            f"publish PostgreSQL on 127.0.0.1 by default, not on every interface: {port}"


def _postgres_urls() -> list[tuple[str, str]]:
    return [(path, value) for path, value in scalars(COMPOSE)
            if value.startswith("postgresql")]


def test_databases_in_urls_are_created_by_the_init_script() -> None:
    pg_env = environment(SERVICES["postgres"])
    sql = " ".join(p.read_text() for p in sorted(INITDB.glob("*.sql")))
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql)) | {pg_env["POSTGRES_DB"]}
    urls = _postgres_urls()
    assert {urlsplit(interpolate(v)).path.lstrip("/") for _, v in urls} >= {"optuna", "mlflow"}
    for path, value in urls:
        url = urlsplit(interpolate(value))
        assert url.hostname == "postgres" and url.hostname in SERVICES, path
        assert url.username == pg_env["POSTGRES_USER"], path
        assert url.path.lstrip("/") in created, f"{path}: database {url.path} is never created"


# -------------------------------------------------------------------------- compose: commands
@pytest.mark.parametrize("name", STUDY_SERVICES)
def test_study_service_runs_a_real_command(name: str, cli_commands: dict[str, Any]) -> None:
    argv = effective_argv(name)
    assert argv[0] == "study"
    command = argv[1]
    assert command in cli_commands, f"{name}: `study` has no command {command!r}"
    params = cli_commands[command].params
    options = {opt for p in params for opt in p.opts}
    unknown = set(long_flags(argv[2:])) - options
    assert not unknown, f"{name}: `study {command}` has no option {sorted(unknown)}"
    # Every service shares the PostgreSQL storage and the tracking server (flag or variable),
    # and a store given by environment instead of a flag must be honoured by the command.
    env = environment(SERVICES[name])
    given = dict(itertools.pairwise(argv))
    assert given.get("--storage", env.get("STUDY_STORAGE", "")).startswith("postgresql://")
    assert given.get("--tracking-uri", env.get("MLFLOW_TRACKING_URI", "")).startswith("http://")
    envvars = {p.envvar: p.opts for p in params if isinstance(p.envvar, str)}
    for flag, var in (("--storage", "STUDY_STORAGE"), ("--tracking-uri", "MLFLOW_TRACKING_URI")):
        if flag not in argv and var in env:
            assert var in envvars, f"{name}: `study {command}` ignores {var}"


def test_worker_joins_the_study_by_name() -> None:
    study, worker = effective_argv("study"), effective_argv("worker")
    assert study[1] == "run" and worker[1] == "worker"

    def value(argv: list[str], flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value(study, "--study-name") == value(worker, "--study-name")
    assert environment(SERVICES["study"]) == environment(SERVICES["worker"])
    assert int(value(study, "--n-trials")) >= 1


def test_worker_scales_out_and_retries() -> None:
    worker = SERVICES["worker"]
    assert int(interpolate(str(worker["deploy"]["replicas"]))) >= 1
    policy, _, tries = str(worker["restart"]).partition(":")
    # Docker backs off up to a minute between tries: 10 spanned under two minutes, too short
    # for a study whose creation decodes an image folder (found by a user).
    assert policy == "on-failure" and (not tries or int(tries) >= 20)
    assert worker["depends_on"]["study"]["condition"] == "service_started"
    for store in ("postgres", "mlflow"):
        assert worker["depends_on"][store]["condition"] == "service_healthy"


def test_mlflow_server_command(mlflow_server_options: dict[str, str | None]) -> None:
    mlflow = SERVICES["mlflow"]
    assert words(mlflow["entrypoint"]) == ["mlflow"]
    argv = words(mlflow["command"])
    assert argv[0] == "server"
    unknown = set(long_flags(argv[1:])) - set(mlflow_server_options)
    assert not unknown, f"`mlflow server` has no option {sorted(unknown)}"
    given = {opt: argv[i + 1] for i, opt in enumerate(argv[:-1]) if opt.startswith("--")}
    env = environment(mlflow)
    envvars = {var: opt for opt, var in mlflow_server_options.items() if var}
    configured = set(given) | {envvars[var] for var in env if var in envvars}
    assert {"--backend-store-uri", "--artifacts-destination", "--host"} <= configured
    backend = given.get("--backend-store-uri") or env[mlflow_server_options[
        "--backend-store-uri"] or ""]
    assert urlsplit(interpolate(backend)).path == "/mlflow"
    assert given["--host"] == "0.0.0.0"
    assert any(given["--artifacts-destination"] == v.split(":")[1] for v in mlflow["volumes"])


def test_tracking_uri_is_served_and_allowed() -> None:
    """Workers reach the server as http://mlflow:5000; its Host check must accept that."""
    argv = words(SERVICES["mlflow"]["command"])
    port = argv[argv.index("--port") + 1]
    allowed = argv[argv.index("--allowed-hosts") + 1].split(",")
    for name in STUDY_SERVICES:
        uri = urlsplit(environment(SERVICES[name])["MLFLOW_TRACKING_URI"])
        assert uri.hostname in SERVICES and str(uri.port) == port, name
        assert any(fnmatch.fnmatch(uri.netloc, pattern) for pattern in allowed), \
            f"{uri.netloc} is not in --allowed-hosts {allowed}"
    assert "*" not in allowed


# ------------------------------------------------------------------------------- credentials
def _recipe_texts() -> dict[str, str]:
    files = [DOCKERFILE, COMPOSE_FILE, *sorted(INITDB.iterdir())]
    return {str(p.relative_to(REPO)): p.read_text() for p in files}


def test_secret_keys_in_compose_come_from_the_environment() -> None:
    def check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_WORD.search(str(key)) and not isinstance(value, (dict, list)):
                    assert REQUIRED_VAR.fullmatch(str(value)), f"{path}.{key}: literal secret"
                check(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                check(item, f"{path}[{i}]")
        elif isinstance(node, str) and "=" in node and SECRET_WORD.search(node.split("=")[0]):
            assert REQUIRED_VAR.fullmatch(node.split("=", 1)[1]), f"{path}: literal secret"

    check(COMPOSE, "compose")
    # A required variable has no default anywhere it is used.
    assert not re.search(r"\$\{\w*(PASSWORD|SECRET|TOKEN)\w*:?-", COMPOSE_FILE.read_text())


@pytest.mark.parametrize("name", sorted(_recipe_texts()))
def test_urls_carry_no_literal_password(name: str) -> None:
    text = _recipe_texts()[name]
    for userinfo in USERINFO_URL.findall(text):
        user, _, password = userinfo.partition(":")
        assert password, f"{name}: URL user {user!r} without an interpolated password"
        assert REQUIRED_VAR.fullmatch(password), f"{name}: literal password in a URL"
    assert not re.search(r"PASSWORD\s+'", text, re.IGNORECASE), f"{name}: SQL password literal"


def test_dockerfile_bakes_in_no_secret() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORD.search(rest), f"{keyword} {rest}"
        if keyword in ("COPY", "ADD"):
            assert ".env" not in rest and "id_rsa" not in rest, f"{keyword} {rest}"


# -------------------------------------------------------------------------------- Dockerfile
def test_base_image_argument_defaults_to_cpu_python() -> None:
    args = dockerfile_args()
    froms = [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert froms[0].split()[0] in ("${BASE_IMAGE}", "$BASE_IMAGE")
    assert args["BASE_IMAGE"].startswith("python:3")
    assert "cuda" not in args["BASE_IMAGE"] and "nvidia" not in args["BASE_IMAGE"]
    assert "whl/cpu" in args["TORCH_SPEC"]
    assert re.search(r"pip install \$\{?TORCH_SPEC\}?(\s|;|$)", DOCKERFILE.read_text())


def test_compose_build_arguments_default_to_the_dockerfile() -> None:
    args = dockerfile_args()
    for name in study_image_services():
        for key, value in (SERVICES[name]["build"].get("args") or {}).items():
            assert interpolate(str(value)) == args[key], f"{name}: build arg {key}"


def test_runs_as_a_non_root_user_with_the_study_entrypoint() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    last_from = max(i for i, k in enumerate(keywords) if k == "FROM")
    users = [(i, rest) for i, (k, rest) in enumerate(instructions) if k == "USER"]
    entrypoint = keywords.index("ENTRYPOINT")
    assert users and last_from < users[-1][0] < entrypoint
    args = dockerfile_args()
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], users[-1][1])
    assert user.split(":")[0] not in ("root", "0", ""), user
    assert json.loads(instructions[entrypoint][1]) == ["study"]
    assert json.loads(dict(instructions)["CMD"]) == ["--help"]
    assert dict(instructions)["WORKDIR"] == "/work"


def test_copy_sources_exist_and_are_only_what_is_needed() -> None:
    allowed = {"pyproject.toml", "README.md", "study", "pipelines", "MLproject",
               "python_env.yaml"}
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            assert source.rstrip("/") in allowed, f"COPY {source}: not needed in the image"
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_installs_the_postgres_extra_into_a_venv() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(dep.startswith("psycopg[binary]") for dep in extras["postgres"])
    text = DOCKERFILE.read_text()
    assert 'pip install ".[postgres]"' in text
    assert "python3 -m venv /opt/venv" in text and "/opt/venv/bin" in text
