"""Where ``SparkJobOperator`` runs a job: local ``spark-submit`` or a Databricks run."""
