"""Package ``mlops_jobs`` as a wheel for cluster runs (Databricks ``python_wheel_task``).

The version carries a hash of the package's sources (``0.1.0+src.<hash>``), so a changed job
gets a new file name and clusters never run a stale cached wheel, while an unchanged job reuses
the uploaded one. The wheel is built directly (it is pure Python with one console script) so
packaging needs no network and no build backend at task run time.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import mlops_jobs

PACKAGE = "mlops_jobs"
BASE_VERSION = "0.1.0"
ENTRY_POINT = "mlops-job"
ENTRY_POINT_TARGET = "mlops_jobs.cli:console_main"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def package_dir() -> Path:
    return Path(mlops_jobs.__file__).resolve().parent


def source_files() -> list[Path]:
    """Files shipped in the wheel: sources and package data, no caches."""
    root = package_dir()
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix in {".py", ".json", ".sql", ".hql"}
    )


def source_hash() -> str:
    """SHA-256 (first 12 hex digits) over the package's relative paths and bytes."""
    digest = hashlib.sha256()
    root = package_dir()
    for path in source_files():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def version() -> str:
    return f"{BASE_VERSION}+src.{source_hash()}"


def wheel_name() -> str:
    return f"{PACKAGE}-{version()}-py3-none-any.whl"


def build_wheel(out_dir: Path) -> Path:
    """Write the wheel into ``out_dir`` (reused when it already exists) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel_name()
    if target.exists():
        return target
    dist_info = f"{PACKAGE}-{version()}.dist-info"
    root = package_dir()
    entries: list[tuple[str, bytes]] = [
        (f"{PACKAGE}/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in source_files()
    ]
    entries += [
        (
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version()}\n"
            "Summary: Cluster-side jobs of the ML platform\nRequires-Python: >=3.11\n".encode(),
        ),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: mlops_jobs.distribution\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        ),
        (
            f"{dist_info}/entry_points.txt",
            f"[console_scripts]\n{ENTRY_POINT} = {ENTRY_POINT_TARGET}\n".encode(),
        ),
    ]
    record_lines = [f"{name},sha256={_urlsafe_digest(data)},{len(data)}" for name, data in entries]
    record_lines.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode()))
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    partial.replace(target)
    return target


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
