#!/bin/bash
# Creates MLflow's role and database beside Airflow's. The postgres image runs the scripts in
# /docker-entrypoint-initdb.d once, when it initialises an empty data directory; a data volume
# created before this script existed needs the same two statements run by hand.
set -euo pipefail

# psql substitutes :'mlflow_password' as a quoted literal, so any password is safe here.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
