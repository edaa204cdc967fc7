# Airflow image for the docker-compose stack: the official image plus the project's locked
# dependencies and the Java runtime that local Spark jobs need.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY requirements.lock /requirements.lock
RUN pip install --no-cache-dir -r /requirements.lock
