"""Package ``mlops_jobs`` as a wheel for cluster runs (Databricks ``python_wheel_task``).

The wheel is an ordinary setuptools build of ``include/pyproject.toml``. Its version carries a
hash of the shipped files and of that pyproject.toml (``0.1.0+src.<hash>``), so a changed job or
a changed dependency gets a new file name and clusters never run a stale cached wheel, while an
unchanged job reuses the uploaded one.
setuptools takes that version from :func:`version` (``[tool.setuptools.dynamic]``), so every
build of the pyproject is versioned the same way. :func:`build_wheel` builds from a temporary
copy that holds only the shipped files: the hash and the wheel cover the same files, and the
source tree gets no ``build/`` or ``*.egg-info``.

This module is also executed by setuptools at build time, so it imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "mlops_jobs"
BASE_VERSION = "0.1.0"
ENTRY_POINT = "mlops-job"
SHIPPED_SUFFIXES = frozenset({".py", ".json", ".sql", ".hql"})
BUILD_TIMEOUT_SECONDS = 300
# Zip timestamps of 1980-01-01 make the same sources give the same wheel bytes.
_SOURCE_DATE_EPOCH = "315532800"
_BUILD_CODE = (
    "import sys, setuptools.build_meta as backend; print(backend.build_wheel(sys.argv[1]))"
)


class PackagingError(RuntimeError):
    """The job wheel could not be built, or it does not hold exactly the shipped files."""


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def project_file() -> Path:
    """The package's ``pyproject.toml`` (next to the package, in ``include/``)."""
    return package_dir().parent / "pyproject.toml"


def _is_shipped(relative: Path) -> bool:
    return relative.suffix in SHIPPED_SUFFIXES and "__pycache__" not in relative.parts


def source_files() -> list[Path]:
    """Files shipped in the wheel: sources and package data of the cluster-side code."""
    root = package_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and _is_shipped(p.relative_to(root)))


def source_hash() -> str:
    """SHA-256 (first 12 hex digits) over the shipped files' relative paths and bytes and the
    bytes of ``pyproject.toml`` (the declared dependencies).

    An installed wheel has no ``pyproject.toml``: there it is the hash the wheel was built with,
    read from its version.
    """
    project = project_file()
    if not _is_package_project(project):
        return importlib.metadata.version(PACKAGE).partition("+src.")[2]
    digest = hashlib.sha256()
    root = package_dir()
    for path in source_files():
        relative = path.relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(b"pyproject.toml\0" + project.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _is_package_project(path: Path) -> bool:
    """Whether ``path`` is this package's pyproject.toml (not, next to an installed copy, some
    other distribution's)."""
    import tomllib

    try:
        return bool(tomllib.loads(path.read_text())["project"]["name"] == PACKAGE)
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return False


def version() -> str:
    return f"{BASE_VERSION}+src.{source_hash()}"


def wheel_name() -> str:
    return f"{PACKAGE}-{version()}-py3-none-any.whl"


def build_wheel(out_dir: Path) -> Path:
    """Build the wheel into ``out_dir`` (reused when it already exists) and return its path.

    The PEP 517 hook of ``setuptools.build_meta`` runs in a child process of this interpreter
    (it changes directory and imports the build tree, which a worker process must not do), without
    build isolation: setuptools and wheel come from this environment, nothing is downloaded.

    :param out_dir: Directory of the wheel; created when missing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel_name()
    if target.exists():
        return target
    root = package_dir()
    with tempfile.TemporaryDirectory(prefix="mlops-jobs-build-") as tmp:
        tree, dist = Path(tmp) / "project", Path(tmp) / "dist"
        for path in source_files():
            copy = tree / PACKAGE / path.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        shutil.copyfile(project_file(), tree / "pyproject.toml")
        dist.mkdir()
        built = dist / _run_backend(tree, dist)
        if built.name != target.name:
            raise PackagingError(f"setuptools built {built.name}, expected {target.name}")
        _check_contents(built, {p.relative_to(root).as_posix() for p in source_files()})
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(built, partial)
        partial.replace(target)
    return target


def _run_backend(tree: Path, dist: Path) -> str:
    # -I: the build sees neither PYTHONPATH (another mlops_jobs) nor the user's site-packages.
    result = subprocess.run(
        [sys.executable, "-I", "-c", _BUILD_CODE, str(dist)],
        cwd=tree,
        env={**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise PackagingError(
            f"building the {PACKAGE} wheel failed (exit code {result.returncode}):\n"
            + (result.stderr or result.stdout)[-4000:]
        )
    return lines[-1]


def _check_contents(wheel: Path, expected: set[str]) -> None:
    """Fail unless the wheel's package files are exactly the hashed ones."""
    with zipfile.ZipFile(wheel) as archive:
        prefix = f"{PACKAGE}/"
        shipped = {n.removeprefix(prefix) for n in archive.namelist() if n.startswith(prefix)}
    if shipped != expected:
        raise PackagingError(
            f"{wheel.name} does not hold exactly the hashed files: "
            f"unexpected {sorted(shipped - expected)}, missing {sorted(expected - shipped)}"
        )
