# Airflow image for the docker-compose stack: the official image plus the project's runtime
# dependencies, locked (requirements-runtime.lock: requirements.txt at the versions of
# requirements.lock, without the development tools), and the Java runtime local Spark jobs need.
FROM apache/airflow:3.3.2-python3.11
USER root
# The JRE's package links its man pages with update-alternatives; slim images have no man1.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY requirements-runtime.lock /requirements-runtime.lock
RUN pip install --no-cache-dir -r /requirements-runtime.lock
