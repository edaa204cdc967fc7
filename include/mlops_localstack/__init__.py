"""The local stack for development and tests: HiveServer2, the Databricks emulator, the UI
launcher, the run summary and the demo warehouse. Never shipped to a cluster (the job wheel
holds ``mlops_jobs`` only)."""
