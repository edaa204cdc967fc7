# Single entry point for the local stack. `make run` and `make test` set up what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
UV_VERSION := 0.13.8
# Everything the local stack needs (AIRFLOW_HOME, AIRFLOW_CONN_*, JAVA, lake root) comes from one
# place: `mlops_localstack.env`. Commands below run inside that environment.
LOCAL := PYTHONPATH=include $(VENV)/bin/python -m mlops_localstack.env exec --
LOCK_STAMP := $(VENV)/.installed-$(shell cat requirements.lock 2>/dev/null | cksum | cut -d' ' -f1)

DEMO_CUSTOMERS ?= 10000
DEMO_DAYS ?= 120
# The demo's last day: yesterday (UTC), the newest day whose labels are complete, so a run
# triggered in the UI with its default logical date (now) finds its data.
DS ?= $(shell $(PYTHON) -c "import datetime as d; print(d.datetime.now(d.UTC).date() - d.timedelta(days=1))")
# bench-extract: rows of its bench table, repetitions (five, so that the median is not swayed by
# the first export, which meets a cold server), and its own HiveServer2's port.
BENCH_ROWS ?= 1000000
BENCH_REPEAT ?= 5
BENCH_HIVESERVER2_PORT ?= 10002
# `make run` trains for the day before DS (the first champion), then for DS (compared with it).
PREVIOUS_DS ?= $(shell $(PYTHON) -c "import datetime as d; print(d.date.fromisoformat('$(DS)') - d.timedelta(days=1))")

.PHONY: setup lock compose-config browser run test lint typecheck hive-start hive-stop hive-status demo-data airflow-init ui ui-stop bench bench-pipeline bench-extract bench-reliability clean

setup: $(LOCK_STAMP)

$(LOCK_STAMP): requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	# tensorflow is reinstalled: an environment that also held tensorflow-cpu (same import
	# package) loses tensorflow's files when sync uninstalls tensorflow-cpu.
	$(VENV)/bin/uv pip sync --reinstall-package tensorflow --python $(VENV)/bin/python requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

# requirements-runtime.lock is what the Docker image installs: requirements.txt without the
# development tools, constrained to the versions of requirements.lock that the tests ran with.
lock:
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements-dev.txt -o requirements.lock
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements.txt -c requirements.lock -o requirements-runtime.lock

# Validates docker-compose.yaml, with the placeholders of .env.example, without a Docker engine:
# Debian's docker-compose (v1) parses, interpolates and checks the file. Installs it when missing.
compose-config:
	@command -v docker-compose >/dev/null || { \
		if [ "$$(id -u)" != 0 ]; then \
			echo "compose-config: docker-compose is not installed; as root, run:" \
				"apt-get install docker-compose" >&2; \
			exit 1; \
		fi; \
		apt-get update -qq && apt-get install -y -qq docker-compose; \
	}
	docker-compose -f docker-compose.yaml --env-file .env.example config -q

hive-start: setup
	$(LOCAL) python -m mlops_localstack.hiveserver2 start

hive-stop: setup
	$(LOCAL) python -m mlops_localstack.hiveserver2 stop

hive-status: setup
	$(LOCAL) python -m mlops_localstack.hiveserver2 status

demo-data: hive-start
	$(LOCAL) python -m mlops_localstack.demo.warehouse --customers $(DEMO_CUSTOMERS) --days $(DEMO_DAYS) --end-ds $(DS)

airflow-init: setup
	$(LOCAL) airflow db migrate >/dev/null
	$(LOCAL) airflow pools set mlflow_registry 1 "Serialises moves of MLflow registry aliases" >/dev/null

# The first day bootstraps the empty registry: its candidate becomes the first champion even if
# the gate would reject it (recorded as overridden, with the reason), so scoring has a model.
# Each training run names its label day (Param ds); the logical date alone would train on the
# day before it (the newest day whose labels are complete when a run is due).
BOOTSTRAP_CONF := {"label_ds": "$(PREVIOUS_DS)", "force_promote": true, "force_reason": "bootstrap: first champion of the demo"}

run: demo-data airflow-init
	$(LOCAL) airflow dags test churn_training $(PREVIOUS_DS) -c '$(BOOTSTRAP_CONF)'
	$(LOCAL) airflow dags test churn_training $(DS) -c '{"label_ds": "$(DS)"}'
	$(LOCAL) airflow dags test churn_batch_scoring $(DS)
	$(LOCAL) python -m mlops_localstack.summary --ds $(PREVIOUS_DS) --ds $(DS)

# Debian's Chromium for the browser test (Playwright drives it; no browser is downloaded).
browser:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" != 0 ]; then \
			echo "browser: Chromium is not installed; as root, run: apt-get install chromium" >&2; \
			exit 1; \
		fi; \
		apt-get update -qq && apt-get install -y -qq chromium; \
	}

test: setup lint typecheck compose-config browser
	$(LOCAL) python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: setup
	$(LOCAL) mypy

bench: setup
	$(LOCAL) python bench/features.py
	$(LOCAL) python bench/train.py
	$(LOCAL) python bench/dag_import.py

bench-pipeline: demo-data airflow-init
	$(LOCAL) python bench/pipeline.py --ds $(DS)

bench-extract: setup
	$(LOCAL) python bench/extract.py --rows $(BENCH_ROWS) --repeat $(BENCH_REPEAT) --port $(BENCH_HIVESERVER2_PORT)

# The fault-injection and hostile-input suites (pytest -m "faults or hostile") and an audit of
# every lake they wrote, summarised as one JSON object.
bench-reliability: setup
	$(LOCAL) python bench/reliability.py

# Airflow's UI, scheduler, DAG processor and triggerer and the MLflow UI on the local stack (the
# state `make run` leaves); Ctrl-C or `make ui-stop` stops everything it started.
ui: hive-start airflow-init
	$(LOCAL) python -m mlops_localstack.ui start

ui-stop: setup
	$(LOCAL) python -m mlops_localstack.ui stop

clean:
	-$(LOCAL) python -m mlops_localstack.hiveserver2 stop
	rm -rf .local
