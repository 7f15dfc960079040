# Two entry points: `make run` starts the bot, `make test` runs the whole suite.
# Each creates .venv and installs what it needs on first use (Python 3.11+ required).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# A .venv made by an older Python, or whose Python no longer runs (upgraded or removed since),
# is removed here and built again below with the newest Python 3.11+ on PATH (or PYTHON=...).
VENV_STATE := $(shell sh scripts/python_ok.sh venv $(VENV))
ifneq ($(VENV_STATE),ok)
BUILD_PYTHON := $(shell sh scripts/python_ok.sh find $(PYTHON))
ifeq ($(BUILD_PYTHON),)
$(error Kontext Bot needs Python 3.11 or newer; install python3.11 and run make again)
endif
endif

.PHONY: run test test-postgres lint bench bench-bot bench-fleet faults fleet simulator postgres-server backup

$(STAMP): pyproject.toml
	$(if $(BUILD_PYTHON),$(BUILD_PYTHON) -m venv $(VENV))
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) bot.py $(ARGS)

# One pytest worker per core: the tests mostly wait on sockets and processes.
test: lint postgres-server
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

# The end-to-end suite again with every bot on PostgreSQL instead of SQLite (about 5 minutes).
test-postgres: $(STAMP) postgres-server
	$(PY) -m pytest -q --store postgres tests/test_e2e_*.py tests/test_shutdown.py $(PYTEST_ARGS)

# The PostgreSQL tests start a throwaway server of their own from the server binaries (Debian
# keeps them off the PATH); install them where this machine lacks them.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# Format, lint and types: CI runs these with the tests.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/client_throughput.py $(ARGS)

# The real bot end to end against WaveSpeed's SDK on the same simulator (several minutes;
# ARGS=--quick for a smoke run under a minute). Installs the bench extra (the SDK) first.
bench-bot: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/bot_end_to_end.py $(ARGS)

# One process on SQLite against a gateway and 1, 2, 4 workers on PostgreSQL: jobs per second
# and completion -> posted (about 2 minutes; ARGS=--quick for a smoke run).
bench-fleet: $(STAMP) postgres-server
	$(PY) benchmarks/fleet.py $(ARGS)

# The end-to-end fault suite at full size (5-10 minutes); the default suite runs it small.
faults: $(STAMP)
	$(PY) benchmarks/fault_suite.py $(ARGS)

# The fleet end to end at full size: 2 gateways, 3 workers (one killed), 200 jobs from 50
# members on PostgreSQL; the default suite runs it with 40 jobs from 10.
fleet: $(STAMP) postgres-server
	FLEET_JOBS=$${FLEET_JOBS:-200} FLEET_MEMBERS=$${FLEET_MEMBERS:-50} \
		$(PY) -m pytest -q tests/test_e2e_fleet.py $(PYTEST_ARGS)

simulator: $(STAMP)
	$(PY) -m services.simulator $(ARGS)

# A consistent copy of the job store, safe while the bot runs: make backup ARGS=PATH
backup: $(STAMP)
	$(PY) -m services.backup $(ARGS)
