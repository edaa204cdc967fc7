"""The job wheel: a setuptools build of ``include/pyproject.toml``, content-versioned, installable.

The clean-environment test installs the wheel's whole dependency closure offline from uv's cache
(where ``make setup`` put the locked packages): ``uv pip install --offline`` cannot resolve there,
because ``uv pip sync`` caches wheels but not the index metadata resolution reads. So the test
walks the wheel's ``Requires-Dist`` through the project environment's installed metadata (what
pip does on a cluster that already has a satisfying version), installs exactly that set with
``--no-deps``, and lets ``uv pip check`` prove the result consistent.
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlops_jobs import distribution
from mlops_jobs.distribution import (
    ENTRY_POINT,
    PACKAGE,
    build_wheel,
    package_dir,
    project_file,
    source_files,
    version,
    wheel_name,
)

# What every Databricks runtime provides, so the wheel must not declare it.
RUNTIME_PROVIDED = frozenset({"pyspark", "py4j"})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package (with its pyproject.toml) that ``distribution`` builds instead."""
    copy = tmp_path / "include" / PACKAGE
    shutil.copytree(package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(project_file(), copy.parent / "pyproject.toml")
    monkeypatch.setattr(distribution, "package_dir", lambda: copy)
    return copy


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.BytesParser().parsebytes(archive.read(name))


def requirements(wheel: Path) -> dict[str, Requirement]:
    parsed = (Requirement(line) for line in metadata(wheel).get_all("Requires-Dist") or [])
    return {canonicalize_name(r.name): r for r in parsed}


def package_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        prefix = f"{PACKAGE}/"
        return {n.removeprefix(prefix) for n in archive.namelist() if n.startswith(prefix)}


def test_metadata_has_the_content_version_and_the_cluster_dependencies(wheel: Path) -> None:
    meta = metadata(wheel)
    assert meta["Name"] == PACKAGE
    assert meta["Version"] == version() == f"0.1.0+src.{distribution.source_hash()}"
    assert wheel.name == wheel_name()
    required = requirements(wheel)
    cluster_needs = {"tensorflow", "tf-keras", "mlflow", "pandas", "pyarrow", "scikit-learn"}
    assert cluster_needs | {"fsspec"} <= set(required)
    # tf-keras needs `tensorflow`; tensorflow-cpu next to it would be a second copy.
    assert not (RUNTIME_PROVIDED | {"tensorflow-cpu"}) & set(required)
    for name, requirement in required.items():
        installed = importlib.metadata.version(name)
        assert requirement.specifier.contains(installed), f"the lock's {name} {installed}"


def test_wheel_ships_the_cluster_code_and_its_data_but_no_local_stack(wheel: Path) -> None:
    shipped = package_files(wheel)
    assert {"cli.py", "distribution.py", "churn/feature_config.json"} <= shipped
    # the local stack is a package of its own, beside the job package, never inside it
    assert not (package_dir() / "localstack").exists() and not (package_dir() / "demo").exists()
    assert shipped == {p.relative_to(package_dir()).as_posix() for p in source_files()}
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(name).decode()
    assert f"{ENTRY_POINT} = mlops_jobs.cli:console_main" in entry_points


def test_build_leaves_nothing_in_the_source_tree(tmp_path: Path) -> None:
    include = package_dir().parent
    before = sorted(p.name for p in include.iterdir())
    build_wheel(tmp_path)
    assert sorted(p.name for p in include.iterdir()) == before
    assert not list(include.glob("*.egg-info")) and not (include / "build").exists()


def test_same_sources_give_the_same_wheel_which_is_reused(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = build_wheel(tmp_path)
    assert again.name == wheel.name
    assert again.read_bytes() == wheel.read_bytes()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("an existing wheel of this version was rebuilt")

    monkeypatch.setattr(subprocess, "run", no_build)
    assert build_wheel(tmp_path) == again


def test_changed_source_gives_a_new_name(package_copy: Path, tmp_path: Path) -> None:
    first = build_wheel(tmp_path / "first")
    with (package_copy / "churn" / "features.py").open("a") as source:
        source.write("\n# changed\n")
    second = build_wheel(tmp_path / "second")
    assert second.name != first.name
    assert metadata(second)["Version"] == version()


def test_changed_dependencies_give_a_new_name(package_copy: Path) -> None:
    before = wheel_name()
    project = package_copy.parent / "pyproject.toml"
    project.write_text(project.read_text().replace('"numpy>=1.26"', '"numpy>=2.0"'))
    assert wheel_name() != before


def test_only_shipped_files_count_and_package_data_is_shipped(
    package_copy: Path, tmp_path: Path
) -> None:
    before = wheel_name()
    (package_copy / "churn" / "notes.txt").write_text("not package data\n")
    assert wheel_name() == before

    (package_copy / "churn" / "queries").mkdir()
    (package_copy / "churn" / "queries" / "latest.sql").write_text("SELECT 1\n")
    (package_copy / "churn" / "extract.hql").write_text("SELECT 2\n")
    assert wheel_name() != before
    shipped = package_files(build_wheel(tmp_path))
    assert {"churn/queries/latest.sql", "churn/extract.hql"} <= shipped
    assert "churn/notes.txt" not in shipped


def dependency_closure(wheel: Path) -> dict[str, str]:
    """The wheel's dependencies and theirs, at the versions this environment has installed."""
    pins: dict[str, str] = {}
    extras: dict[str, set[str]] = {}
    pending = [(requirement, "") for requirement in requirements(wheel).values()]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        installed = importlib.metadata.version(name)
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
        new_extras = set(requirement.extras) - extras.setdefault(name, set())
        if name in pins and not new_extras:
            continue
        extras[name] |= new_extras
        pins[name] = installed
        for line in importlib.metadata.requires(name) or []:
            pending += [(Requirement(line), e) for e in ["", *sorted(new_extras)]]
    return pins


def third_party_imports(wheel: Path) -> set[str]:
    """Top-level modules the shipped code imports, anywhere in a module, beyond the stdlib."""
    names: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(".py"):
                for node in ast.walk(ast.parse(archive.read(name))):
                    if isinstance(node, ast.Import):
                        names.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {PACKAGE} - RUNTIME_PROVIDED


def run(
    command: list[str | Path], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installs_and_runs_in_a_clean_environment(wheel: Path, tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is installed into the project environment by `make setup`"
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run([uv, "venv", "--offline", "--python", sys.executable, venv])
    pins = [f"{name}=={pinned}" for name, pinned in dependency_closure(wheel).items()]
    run([uv, "pip", "install", "--offline", "--no-deps", "--python", python, wheel, *pins])
    run([uv, "pip", "check", "--offline", "--python", python])

    env = {"PATH": os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"]), "HOME": str(tmp_path)}
    result = run([venv / "bin" / ENTRY_POINT, "version"], env=env, cwd=tmp_path)
    installed_hash = json.loads(result.stdout.splitlines()[-1])["source_hash"]
    assert installed_hash == metadata(wheel)["Version"].split("+src.")[1]

    modules = sorted(third_party_imports(wheel))
    assert {"tf_keras", "mlflow", "sklearn"} <= set(modules)
    check = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    run([python, "-c", check, *modules], env=env, cwd=tmp_path)
    # Really a clean environment: nothing of the project's environment leaks in.
    isolated = subprocess.run(
        [python, "-c", "import pyspark"], env=env, cwd=tmp_path, capture_output=True, check=False
    )
    assert isolated.returncode != 0
