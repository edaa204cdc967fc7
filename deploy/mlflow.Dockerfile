# MLflow tracking server for the docker-compose stack. The official image holds MLflow alone, with
# no database driver; the stack keeps MLflow's runs and registry in its Postgres.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.13
