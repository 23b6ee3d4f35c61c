# Two commands on a fresh machine (Python 3.11 with venv; Debian/Ubuntu for the browser test):
#   make run    install the runtime and serve the app with the shipped model and SQLite
#   make test   install runtime + test tools (and Chromium and PostgreSQL when root) and run every test
#   make test-fast   the same less the tests marked slow (servers, training, browser): a few minutes
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The host names the served app answers for (other Host headers get 400, so that no redirect or API
# Location is built from one): the bind address, and localhost when bound to loopback.
TRUSTED_HOSTS ?= ["$(HOST)"$(if $(filter 127.0.0.1,$(HOST)),$(comma) "localhost")]
comma := ,

.PHONY: run dev test test-fast install install-dev browser postgres pacs-servers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# gunicorn also starts the DICOM listener (CXR_DICOM_LISTEN; port CXR_DICOM_PORT, default 11112): one command.
run: install
	$(BIN)/flask --app app init-db
	CXR_BIND=$(HOST):$(PORT) CXR_TRUSTED_HOSTS='$(TRUSTED_HOSTS)' CXR_DICOM_LISTEN=$${CXR_DICOM_LISTEN:-1} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

dev: install
	$(BIN)/flask --app app run --debug --host $(HOST) --port $(PORT)

# Debian's Chromium for the end-to-end browser test; without root it is skipped (with a reason).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# Debian's PostgreSQL server for the `postgres` tests, which start a throwaway one on loopback
# (tests/conftest.py; the driver is in requirements-dev.txt); without root they are skipped (with a
# reason), and with CI=true they fail.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null; \
	fi

# Debian's Orthanc (a real PACS, with DICOMweb) and Redis for the PACS tests (tests/test_pacs*.py); like
# Chromium, installed when root, else those tests are skipped (with a reason) outside CI.
pacs-servers:
	@if { [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || \
		! command -v redis-server >/dev/null; } && [ "$$(id -u)" = 0 ]; then \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq orthanc orthanc-dicomweb redis-server >/dev/null; \
	fi

test: install-dev browser postgres pacs-servers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-fast: install-dev postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow"
