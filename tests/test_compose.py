"""The compose file cannot be started here (no Docker engine); check that it is coherent."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_and_dependencies_exist() -> None:
    compose = load()
    services = compose["services"]
    for name in ("postgres", "hive", "mlflow", "airflow-apiserver", "airflow-scheduler"):
        assert name in services
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_airflow_services_share_the_stack_configuration() -> None:
    services = load()["services"]
    airflow = {k: v for k, v in services.items() if k.startswith("airflow-")}
    for name, service in airflow.items():
        env = service["environment"]
        assert env["AIRFLOW_CONN_HIVESERVER2_DEFAULT"].startswith("hiveserver2://hive:10000/")
        assert env["MLOPS_LAKE_ROOT"] == "/lake"
        assert "/opt/airflow/include" in env["PYTHONPATH"].split(":")
        assert "lake:/lake" in service["volumes"], name
    # HiveServer2 writes snapshots into the same lake volume the workers publish from.
    assert "lake:/lake" in services["hive"]["volumes"]


def test_init_creates_the_registry_pool_and_airflow_reaches_mlflow() -> None:
    services = load()["services"]
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "pools set mlflow_registry 1" in init
    env = services["airflow-scheduler"]["environment"]
    assert '"host": "http://mlflow:5000"' in env["AIRFLOW_CONN_MLFLOW_DEFAULT"]
