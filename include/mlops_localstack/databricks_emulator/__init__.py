"""A local HTTP emulator of the Databricks REST API subset the job operator uses.

Endpoints (under ``/api``): Jobs ``2.2/jobs/runs/submit`` (also 2.1), ``runs/get``, ``runs/list``,
``runs/get-output``, ``runs/cancel``; DBFS ``2.0/dbfs/create``/``add-block``/``close``/``put``/
``get-status``; the Files API on Unity Catalog volumes, ``2.0/fs/files{path}`` (PUT, HEAD, GET,
DELETE) and ``2.0/fs/directories{path}`` (PUT, HEAD, GET); and ``/.well-known/databricks-config``,
which databricks-sdk reads when it starts. Every ``/api`` call needs ``Authorization: Bearer
<token>``; errors are ``{"error_code": ..., "message": ...}`` with the public API's status codes.

Storage is plain directories under the emulator's root: ``dbfs_root`` holds ``dbfs:/<path>`` and
``volumes_root`` holds ``/Volumes/<catalog>/<schema>/<volume>/<path>`` (volumes exist implicitly),
so files uploaded through the API and data a job writes are the same files.

Runs go through the documented life cycle (PENDING, RUNNING, TERMINATING, TERMINATED with
SUCCESS/FAILED/CANCELED, or INTERNAL_ERROR) and really execute, as on a job cluster:

* At submit, a ``whl`` library on the DBFS root is refused, as Runtime 15+ does (unless
  ``allow_dbfs_root_libraries``); libraries must exist.
* Cluster start resolves ``{{secrets/<scope>/<key>}}`` values of ``spark_env_vars`` and
  ``spark_conf`` from ``secrets``; an unknown secret fails the run (INTERNAL_ERROR).
* Library installation unpacks the wheels into the run's site directory and checks that their
  ``Requires-Dist`` (markers honoured) are installed in the runtime, the emulator's interpreter:
  nothing is installed from an index, so a missing or incompatible dependency fails the run
  before the job starts, naming the requirement.
* The console-script entry point runs in a fresh process of the runtime interpreter, in the run's
  directory, with only the run specification's environment (``new_cluster.spark_env_vars``, or
  ``cluster_env`` for ``existing_cluster_id``) plus the runtime's own variables: ``PATH``,
  ``HOME``, ``JAVA_HOME`` (when the emulator has one), ``DATABRICKS_RUNTIME_VERSION``,
  ``PYTHONPATH`` (the site directory), ``PYSPARK_PYTHON``, ``PYSPARK_SUBMIT_ARGS`` (local Spark
  with the cluster's ``spark_conf``), ``SPARK_LOCAL_IP``, ``MLOPS_SPARK_MASTER`` and
  ``MLOPS_LAKE_MOUNTS``, which maps ``dbfs:/`` and ``/Volumes/`` to the storage directories
  (the stand-in for the cluster's FUSE mounts). The runtime's variables win over the run's.

Faults can be injected (``faults``): HTTP error responses for the next N matching requests, a
run that fails, an internal error, a slow start that leaves time to cancel.

Modules: ``model`` (runs, faults, errors), ``jobs`` (the Jobs API), ``storage`` (DBFS and
volumes), ``http`` (a Starlette app on uvicorn), ``emulator`` (state, routing, faults).

Usage: ``python -m mlops_localstack.databricks_emulator --port 8765`` then
``AIRFLOW_CONN_DATABRICKS_DEFAULT='{"conn_type": "databricks", "host": "127.0.0.1",
"port": 8765, "schema": "http", "password": "dapi-local"}'``.
"""

from __future__ import annotations

from mlops_localstack.databricks_emulator.emulator import DatabricksEmulator, main
from mlops_localstack.databricks_emulator.model import ApiError, Faults, HttpFault, Run

__all__ = ["ApiError", "DatabricksEmulator", "Faults", "HttpFault", "Run", "main"]
