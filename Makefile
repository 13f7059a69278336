# `make run` serves the API; `make test` runs the whole suite. Both install what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint system-deps model eval bench clean up down status logs restart-web

$(STAMP): pyproject.toml
	./scripts/ensure-system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	./scripts/ensure-system-deps.sh

# One worker: OpenVINO already spreads one inference over every core (see README, "Workers").
run: $(STAMP) system-deps
	./scripts/ensure-redis.sh
	$(VENV)/bin/uvicorn app.main:app --host $(HOST) --port $(PORT) --workers 1 --no-access-log \
		--timeout-graceful-shutdown 10

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests scripts bench
	$(VENV)/bin/ruff format --check app tests scripts bench
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint
	$(VENV)/bin/pytest

# Rebuild the demo model from generated scenes (needs the train extra; no network). See README.
model:
	test -x .venv-train/bin/python || python3 -m venv .venv-train
	.venv-train/bin/pip install --quiet -e '.[train]'
	PYTHONPATH=scripts .venv-train/bin/python scripts/build_model.py

eval: $(STAMP)
	PYTHONPATH=scripts $(PY) scripts/evaluate.py

clean:
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache

# Operator stack (scripts/stack.sh): Redis if none answers, the API in the background (var/run/api.pid,
# var/log/api.log). `down` stops the API with SIGTERM and only a Redis that `up` started.
up: $(STAMP) system-deps
	HOST=$(HOST) PORT=$(PORT) VENV=$(VENV) ./scripts/stack.sh up

down:
	HOST=$(HOST) PORT=$(PORT) ./scripts/stack.sh down

status:
	HOST=$(HOST) PORT=$(PORT) ./scripts/stack.sh status

logs:
	./scripts/stack.sh logs

restart-web: $(STAMP)
	HOST=$(HOST) PORT=$(PORT) VENV=$(VENV) ./scripts/stack.sh restart-web
