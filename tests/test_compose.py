"""The compose stack cannot be started here (no Docker engine): check that it would work.

The checks read docker-compose.yaml, .env.example, the Dockerfile and the locks as text; the
last ones run Debian's docker-compose (v1) on the file when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
INIT = "volume-init"
AIRFLOW_USER = "50000:0"
# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$${` is an escaped dollar, not a reference.
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
SECRET_KEY = re.compile(r"(FERNET_KEY|JWT_SECRET|SECRET_KEY|PASSWORD)$")
DEV_TOOLS = ("pytest", "ruff", "mypy")


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return load()["services"]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source (a volume name or a relative path) of a service."""
    result = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        result[target] = source
    return result


def named_volume_at(service: dict[str, Any], path: str) -> str | None:
    """The named volume holding ``path`` in ``service`` (the deepest mount above it)."""
    volumes = load()["volumes"]
    above = [
        (len(target), source)
        for target, source in mounts(service).items()
        if source in volumes and (path == target or path.startswith(target + "/"))
    ]
    return max(above)[1] if above else None


def conditions(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(words: list[str], name: str) -> str:
    """Value of ``--name=value`` or ``--name value`` in a command line."""
    for index, word in enumerate(words):
        if word == name:
            return words[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} is not on the command line {words}")


def init_ownership() -> dict[str, tuple[str, int]]:
    """Volume name -> (owner given by chown, mode given by chmod) in the init service."""
    init = services()[INIT]
    words = command_words(init)
    assert words[:2] == ["sh", "-euc"], "the init script stops at its first failure"
    at = mounts(init)
    owners: dict[str, str] = {}
    modes: dict[str, int] = {}
    for line in words[2].splitlines():
        verb, *arguments = shlex.split(line) or [""]
        if verb == "chown":
            owners.update({at[path]: arguments[0] for path in arguments[1:]})
        elif verb == "chmod":
            modes.update({at[path]: int(arguments[0], 8) for path in arguments[1:]})
    return {volume: (owner, modes.get(volume, 0)) for volume, owner in owners.items()}


def references(text: str) -> dict[str, str]:
    """Variable name -> its modifier (``:?...``, ``:-...`` or empty) for each ``${...}``."""
    return {m.group(1): m.group(2) or "" for m in REFERENCE.finditer(text)}


def placeholders(value: str) -> str:
    """``value`` with each ``${NAME...}`` replaced by ``{{NAME}}``, so it parses as a URL (the
    ``?`` of ``${NAME:?message}`` would otherwise start a query string)."""
    return REFERENCE.sub(lambda m: "{{" + m.group(1) + "}}", value)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def used_variables() -> dict[str, str]:
    """Every variable the compose file interpolates (comments excluded), with its modifier."""
    found: dict[str, str] = {}
    for text in _strings(load()):
        found.update(references(text))
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^]]*\])?==(\S+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return found


# -- structure ----------------------------------------------------------------------------------


def test_services_dependencies_and_volumes_exist() -> None:
    compose = load()
    for name in ("postgres", "hive", "mlflow", "airflow-apiserver", "airflow-scheduler"):
        assert name in compose["services"]
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
        for target, source in mounts(service).items():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source} at {target}"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"


def test_airflow_services_share_the_stack_configuration() -> None:
    all_services = services()
    airflow = {k: v for k, v in all_services.items() if k.startswith("airflow-")}
    assert airflow
    for name, service in airflow.items():
        env = service["environment"]
        assert env["AIRFLOW_CONN_HIVESERVER2_DEFAULT"].startswith("hiveserver2://hive:10000/")
        assert env["MLOPS_LAKE_ROOT"] == "/lake"
        assert "/opt/airflow/include" in env["PYTHONPATH"].split(":")
        assert mounts(service).get("/lake") == "lake", name
        assert service["user"] == AIRFLOW_USER, name
    # HiveServer2 writes snapshots into the same lake volume the workers publish from.
    assert mounts(all_services["hive"]).get("/lake") == "lake"


def test_init_creates_the_registry_pool() -> None:
    init = " ".join(command_words(services()["airflow-init"]))
    assert "airflow db migrate" in init and "pools set mlflow_registry 1" in init


# -- users and the shared volumes -----------------------------------------------------------


def test_init_hands_each_volume_to_its_writers_with_group_zero() -> None:
    all_services = services()
    init = all_services[INIT]
    assert is_one_shot(init) and init.get("user", "0:0").split(":")[0] == "0"
    ownership = init_ownership()
    assert ownership["lake"][0] == AIRFLOW_USER
    for volume, (owner, mode) in ownership.items():
        # setgid keeps group 0 on new entries; group write lets every writer replace them.
        assert owner.endswith(":0") and mode & 0o2070 == 0o2070, (volume, owner, oct(mode))
        for name, service in all_services.items():
            if name == INIT or volume not in mounts(service).values():
                continue
            user = service.get("user")
            assert user is not None, f"{name} mounts {volume} with the image's default user"
            uid, gid = user.split(":")
            # Writes by the owner, or by a member of the owning group 0.
            assert uid == owner.split(":")[0] or gid == "0", (name, volume, user)


def test_every_service_on_a_prepared_volume_waits_for_the_init() -> None:
    prepared = set(init_ownership())
    assert {"lake", "hive-metastore", "hive-warehouse", "demo"} <= prepared
    for name, service in services().items():
        if name != INIT and prepared & set(mounts(service).values()):
            assert conditions(service).get(INIT) == "service_completed_successfully", name


def test_hive_creates_group_writable_files_in_the_lake() -> None:
    hive = services()["hive"]
    assert hive["user"] == "1000:0"
    assert "umask 0002" in " ".join(hive["entrypoint"])
    assert "/entrypoint.sh" in " ".join(hive["entrypoint"])
    site = {v: k for k, v in mounts(hive).items()}
    config = [s for s in site if s.endswith("core-site.xml")]
    assert len(config) == 1 and site[config[0]] == "/opt/hadoop/etc/hadoop/core-site.xml"
    properties = {
        p.findtext("name"): p.findtext("value")
        for p in ET.parse(ROOT / config[0]).getroot().iter("property")
    }
    assert properties["fs.permissions.umask-mode"] == "002"


# -- MLflow and Postgres ----------------------------------------------------------------------


def test_mlflow_keeps_its_runs_in_its_own_postgres_database() -> None:
    all_services = services()
    mlflow = all_services["mlflow"]
    uri = urlsplit(placeholders(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]))
    assert uri.scheme.startswith("postgresql") and uri.hostname == "postgres"
    assert uri.path == "/mlflow" and uri.username == "mlflow"
    assert conditions(mlflow)["postgres"] == "service_healthy"
    # The driver the URI names is installed in the image built for MLflow.
    dockerfile = ROOT / mlflow["build"]["context"] / mlflow["build"]["dockerfile"]
    assert "psycopg2" in uri.scheme and "psycopg2-binary==" in dockerfile.read_text()
    # Postgres creates that role and database, with the password the URI uses.
    postgres = all_services["postgres"]
    init_scripts = [
        ROOT / source
        for target, source in mounts(postgres).items()
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert len(init_scripts) == 1
    script = init_scripts[0].read_text()
    assert "CREATE DATABASE mlflow OWNER mlflow" in script and "CREATE ROLE mlflow" in script
    assert uri.password == "{{MLFLOW_DB_PASSWORD}}"
    assert "MLFLOW_DB_PASSWORD" in postgres["environment"]
    assert "$MLFLOW_DB_PASSWORD" in script
    if os.name == "posix":
        assert os.access(init_scripts[0], os.X_OK)


def test_mlflow_accepts_the_host_names_it_is_reached_by() -> None:
    all_services = services()
    words = command_words(all_services["mlflow"])
    allowed = option(words, "--allowed-hosts").split(",")
    assert {"mlflow", "mlflow:5000"} <= set(allowed)
    env = all_services["airflow-scheduler"]["environment"]
    connection = json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    for url in (connection["host"], env["MLFLOW_TRACKING_URI"]):
        assert urlsplit(url).netloc in allowed, url
    # A browser on the host reaches the published port as localhost:<port>.
    assert "localhost:*" in allowed
    # Artifacts go to a volume, through the server.
    destination = option(words, "--artifacts-destination")
    assert named_volume_at(all_services["mlflow"], destination) is not None


# -- Hive -------------------------------------------------------------------------------------


def test_hive_metastore_and_warehouse_are_on_volumes() -> None:
    hive = services()["hive"]
    options = hive["environment"]["SERVICE_OPTS"]
    url = re.search(r"-Djavax\.jdo\.option\.ConnectionURL=(\S+)", options)
    assert url is not None
    database = re.search(r"databaseName=([^;]+)", url.group(1))
    assert database is not None and url.group(1).startswith("jdbc:derby:")
    assert named_volume_at(hive, database.group(1)) == "hive-metastore"
    assert named_volume_at(hive, "/opt/hive/data/warehouse") == "hive-warehouse"


# -- health and start order -------------------------------------------------------------------


EXPECTED_HEALTH_CHECKS = {
    "postgres": "pg_isready",
    "hive": "/dev/tcp/127.0.0.1/10000",
    "mlflow": "/health",
    "airflow-apiserver": "/api/v2/monitor/health",
    "airflow-scheduler": "--job-type SchedulerJob",
    "airflow-dag-processor": "--job-type DagProcessorJob",
    "airflow-triggerer": "--job-type TriggererJob",
}


def test_every_long_running_service_has_a_health_check() -> None:
    all_services = services()
    long_running = {name for name, service in all_services.items() if not is_one_shot(service)}
    assert long_running == set(EXPECTED_HEALTH_CHECKS)
    for name in long_running:
        test = all_services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert EXPECTED_HEALTH_CHECKS[name] in " ".join(test[1:]), name


def test_dependencies_wait_for_health_or_completion() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency, condition in conditions(service).items():
            expected = (
                "service_completed_successfully"
                if is_one_shot(all_services[dependency])
                else "service_healthy"
            )
            assert condition == expected, f"{name} -> {dependency}: {condition}"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        waits_for = conditions(all_services[name])
        assert {"postgres", "airflow-init"} <= set(waits_for), name
    assert "airflow-apiserver" in conditions(all_services["airflow-scheduler"])


# -- demo data --------------------------------------------------------------------------------


def test_demo_data_is_loaded_through_hive_before_the_scheduler_starts() -> None:
    all_services = services()
    demo = all_services["demo-data"]
    assert is_one_shot(demo)
    assert conditions(demo)["hive"] == "service_healthy"
    assert conditions(all_services["airflow-scheduler"])["demo-data"] == (
        "service_completed_successfully"
    )
    words = command_words(demo)
    assert words[:3] == ["python", "-m", "mlops_localstack.demo.warehouse"]
    assert option(words, "--host") == "hive" and option(words, "--port") == "10000"
    # The size comes from .env, with a default.
    for flag, variable in (
        ("--customers", "DEMO_CUSTOMERS"),
        ("--days", "DEMO_DAYS"),
        ("--end-ds", "DEMO_END_DS"),
    ):
        assert list(references(option(words, flag))) == [variable], flag
    # The loader writes its files under MLOPS_LOCAL_ROOT and HiveServer2 reads them by path:
    # the same volume must be mounted at the same place in both.
    local_root = demo["environment"]["MLOPS_LOCAL_ROOT"]
    volume = named_volume_at(demo, local_root)
    assert volume is not None
    assert named_volume_at(all_services["hive"], local_root) == volume
    assert mounts(demo).get("/opt/airflow/include") == "./include"


# -- secrets ----------------------------------------------------------------------------------


def _environments() -> list[tuple[str, str, str]]:
    found = []
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            found.append((name, key, str(value)))
    return found


def test_secrets_come_from_interpolated_variables() -> None:
    secrets = [(n, k, v) for n, k, v in _environments() if SECRET_KEY.search(k)]
    assert {k for _, k, _ in secrets} >= {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "POSTGRES_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
    }
    for name, key, value in secrets:
        match = REFERENCE.fullmatch(value)
        assert match is not None, f"{name}: {key} is not a ${{...}} reference"
        assert (match.group(2) or "").startswith(":?"), f"{name}: {key} must be required"
    # Passwords inside connection URLs too.
    checked = set()
    for name, key, value in _environments():
        parts = urlsplit(placeholders(value))
        if parts.password is not None:
            assert re.fullmatch(r"\{\{\w+\}\}", parts.password), f"{name}: {key}: literal password"
            checked.add(key)
    assert {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_BACKEND_STORE_URI"} <= checked
    assert "change-me" not in COMPOSE_FILE.read_text()


def test_env_example_defines_every_variable_the_file_uses() -> None:
    used = used_variables()
    defined = env_example()
    assert sorted(set(used) - set(defined)) == []
    required = [name for name, modifier in used.items() if modifier.startswith(":?")]
    assert required
    for name in required:
        assert defined[name], f"{name} is required but empty in .env.example"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "Fernet.generate_key()" in ENV_EXAMPLE.read_text()


# -- the image ----------------------------------------------------------------------------------


def test_image_installs_the_runtime_lock_on_the_pinned_airflow() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11$", dockerfile, re.MULTILINE)
    assert base is not None
    assert pins(ROOT / "requirements.txt")["apache-airflow"] == base.group(1)
    assert re.search(r"^COPY requirements-runtime\.lock (\S+)$", dockerfile, re.MULTILINE)
    assert re.search(r"pip install .*-r /requirements-runtime\.lock", dockerfile)
    instructions = [line for line in dockerfile.splitlines() if not line.startswith("#")]
    assert not any(re.search(r"\brequirements\.lock\b", line) for line in instructions)


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns == ["*"] + [f"!{source}" for source in copied]


def test_runtime_lock_has_no_dev_tools_and_the_tested_versions() -> None:
    runtime = pins(ROOT / "requirements-runtime.lock")
    tested = pins(ROOT / "requirements.lock")
    assert [tool for tool in DEV_TOOLS if tool in runtime] == []
    assert {name: version for name, version in runtime.items() if tested.get(name) != version} == {}
    # Every direct runtime requirement is in it, at its pinned version.
    for name, version in pins(ROOT / "requirements.txt").items():
        assert runtime.get(name) == version, name


# -- docker-compose itself -------------------------------------------------------------------


def _docker_compose(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (make compose-config installs it)")
    # Only the env file decides the variables: none leak in from the caller's environment.
    env = {k: v for k, v in os.environ.items() if k not in used_variables()}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_accepts_the_file_with_the_example_settings() -> None:
    result = _docker_compose(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _docker_compose(empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr, result.stderr
