# `make run` serves the API; `make test` runs the whole suite. Both install what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where `make run` / `make up` serve: `make up PORT=8123`, or HOST/PORT in the environment.
HOST ?= 127.0.0.1
PORT ?= 8000
# HOST/PORT reach scripts/stack.sh only when given (command line or environment): without them, status,
# down and restart-web use the address `up` recorded in var/run/api.env.
given = $(if $(filter command% environment%,$(origin $(1))),$(1)='$($(1))')
STACK_ADDR = $(call given,HOST) $(call given,PORT)

.PHONY: run test test-fast lint system-deps model model-int8 eval eval-tracking bench bench-peer bench-stream bench-map clean up down status logs restart-web restart-worker faults soak artillery artillery-deps rehearsal

# The client and the `hazard` command line are a distribution of their own (hazard_client/pyproject.toml: installable
# without the service's dependencies); the tests and `make` users get it editable beside the service.
$(STAMP): pyproject.toml hazard_client/pyproject.toml
	./scripts/ensure-system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./hazard_client
	touch $(STAMP)

system-deps:
	./scripts/ensure-system-deps.sh

# hazard-api (app/entrypoints/api.py): one uvicorn worker (OpenVINO already spreads one inference over every core, see
# README "Workers"), no access log, 10 s graceful shutdown, and the connection bounds of app/entrypoints/server.py.
run: $(STAMP) system-deps
	./scripts/ensure-redis.sh
	$(VENV)/bin/hazard-api --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests scripts bench hazard_client
	$(VENV)/bin/ruff format --check app tests scripts bench hazard_client
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache  # the import contracts of pyproject.toml [tool.importlinter]

# The suite in two parts: every test not marked `serial` spread over TEST_WORKERS processes (pytest-xdist; each
# starts its own Redis, cluster and PostgreSQL on free ports; a worker that is free takes a busy one's queued tests),
# then the `serial` ones (timed under load: rates, deadlines, latency gates) alone, so no other test's CPU is beside
# them. Two workers by default: on two cores ~11 min in all instead of ~19:30 one test at a time (TEST_WORKERS=0,
# this one process). The suite's apps and servers give a frame 10 s (production: 1 s), so a frame beside other
# workers' tests is late only where a test sets the deadline itself. $(1): the tests' marker expression.
TEST_WORKERS ?= 2
pytest_in_two_parts = $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal -m "($(1)) and not serial" \
	&& $(VENV)/bin/pytest -m "($(1)) and serial"

# Artillery before pytest (tests/system/test_https_front.py runs the smoke scenario with it): its npm install, mostly
# waiting on the registry, runs beside the lint on a fresh machine.
test: $(STAMP) system-deps
	$(MAKE) --no-print-directory -j2 lint artillery-deps
	$(call pytest_in_two_parts,unit or integration or api or system)

# Everything but the system tier (processes, browser, deploy files, faults, soak): a few minutes.
test-fast: $(STAMP) system-deps
	$(call pytest_in_two_parts,not system)

# The fault and soak tests at the length of the original findings (the suite runs them short): Redis frozen
# 20 s under 20 frames/s, and a 10-minute soak over short-lived sessions.
FAULT_FREEZE_SECONDS ?= 20
SOAK_SECONDS ?= 600
faults: $(STAMP) system-deps
	FAULT_FREEZE_SECONDS=$(FAULT_FREEZE_SECONDS) $(VENV)/bin/pytest -q -p no:cacheprovider tests/system/test_redis_faults.py

soak: $(STAMP) system-deps
	SOAK_SECONDS=$(SOAK_SECONDS) $(VENV)/bin/pytest -q -s -p no:cacheprovider tests/system/test_soak.py

# The multi-host failure rehearsal, long form (the suite runs tests/system/test_rehearsal.py, two faults): network
# namespaces as hosts (root, iproute2), HAProxy, two remote-mode API replicas, two workers, a Redis Cluster of 3
# masters with a replica each, a queue Redis; an API replica, a worker, a cluster master killed and the queue Redis
# frozen under REHEARSAL_RATE frames/s. Writes bench/results/rehearsal.json; docs/RUNBOOK.md "Failure rehearsal".
REHEARSAL_RATE ?= 12
REHEARSAL_WINDOW ?= 15
rehearsal: $(STAMP) system-deps
	$(PY) -m bench.rehearsal --rate $(REHEARSAL_RATE) --window $(REHEARSAL_WINDOW)

# The Artillery of artillery/package-lock.json (npm ci into var/tools/artillery; Debian's nodejs and npm when npm is
# missing). A no-op once that lock is installed.
artillery-deps:
	./scripts/ensure-artillery.sh >/dev/null

# A load scenario (artillery/load.yml, 3.5 min; ARTILLERY_SCENARIO=artillery/smoke.yml for 30 s) with the real Artillery
# against the API already serving on HOST:PORT (`make run` first); its gates decide the exit code. The key comes from
# HAZARD_API_KEY, or is made here through the admin API with ADMIN_TOKEN (the server's), with the limits the scenario
# headers document. scripts/artillery.sh runs Artillery offline (no telemetry).
ARTILLERY_SCENARIO ?= artillery/load.yml
ARTILLERY_KEY_LIMITS := --sessions-per-minute 150 --frames-per-second 50
artillery: $(STAMP) artillery-deps
	@key="$${HAZARD_API_KEY:-}"; \
	if [ -z "$$key" ]; then \
	  test -n "$${ADMIN_TOKEN:-}" || { echo "artillery: set HAZARD_API_KEY (a key with the detect scope, see $(ARTILLERY_SCENARIO)) or ADMIN_TOKEN (the server's) to make one"; exit 1; }; \
	  key=$$($(VENV)/bin/hazard keys create --server http://$(HOST):$(PORT) --api-key "$$ADMIN_TOKEN" \
	    --name artillery --tenant load-test --scope detect $(ARTILLERY_KEY_LIMITS)) || exit 1; \
	fi; \
	HAZARD_API_KEY="$$key" ./scripts/artillery.sh run --target http://$(HOST):$(PORT) $(ARTILLERY_SCENARIO)

# Rebuild the demo model from generated scenes (needs the train extra; no network). See README.
model:
	test -x .venv-train/bin/python || python3 -m venv .venv-train
	.venv-train/bin/pip install --quiet -e '.[train]'
	PYTHONPATH=scripts .venv-train/bin/python scripts/build_model.py
	$(MAKE) model-int8

# The INT8 sibling: NNCF post-training quantization of the FP16 IR on generated scenes (own venv, no torch).
model-int8:
	test -x .venv-quant/bin/python || python3 -m venv .venv-quant
	.venv-quant/bin/pip install --quiet 'nncf>=3.4,<4' 'openvino>=2025.0' numpy pillow pyyaml
	PYTHONPATH=.:scripts .venv-quant/bin/python scripts/quantize_model.py

eval: $(STAMP)
	PYTHONPATH=scripts $(PY) scripts/evaluate.py

# The speed comparison of docs/PERFORMANCE.md against the API already serving on HOST:PORT (`make run` first): the
# floor (benchmark_app + decode), our sustainable rate, latency at 5/s and at 50 %/90 % of it, overload at 1.5x, and
# the naive peer (bench/peer.py: FastAPI + Ultralytics on PEER_MODEL_DIR, the same IR) at the same rates. The peer
# runs from .venv-train (the train extra: torch, ultralytics), never from the service's venv. bench/results/load.json.
PEER_PORT ?= 8001
PEER_MODEL_DIR ?= models/best0408_openvino_model
# e.g. PEER_ARGS="--infer-precision f32" when the API runs with MODEL_INFERENCE_PRECISION=f32
PEER_ARGS ?=
BENCH_ARGS ?=
TRAIN_STAMP := .venv-train/.installed
$(TRAIN_STAMP): pyproject.toml
	test -x .venv-train/bin/python || python3 -m venv .venv-train
	.venv-train/bin/pip install --quiet -e '.[train]'
	touch $(TRAIN_STAMP)

bench-peer: $(STAMP) $(TRAIN_STAMP)
	@$(PY) -c "import httpx,sys; httpx.get('http://$(HOST):$(PORT)/health/ready', timeout=5).raise_for_status()" \
	  || { echo "bench-peer: no ready API at $(HOST):$(PORT); start it first (make run)"; exit 1; }
	.venv-train/bin/python -m bench.peer --port $(PEER_PORT) --model-dir $(PEER_MODEL_DIR) $(PEER_ARGS) & peer=$$!; \
	  trap 'kill $$peer' EXIT; \
	  for _ in $$(seq 120); do \
	    $(PY) -c "import httpx; httpx.get('http://127.0.0.1:$(PEER_PORT)/health/ready', timeout=2).raise_for_status()" \
	      2>/dev/null && break; sleep 1; \
	  done; \
	  $(PY) -m bench.load --suite --url http://$(HOST):$(PORT) --peer-url http://127.0.0.1:$(PEER_PORT) $(BENCH_ARGS)

# Frames over WebSocket streams vs HTTP on the API already serving on HOST:PORT (`make run` first, with
# SESSION_RATE_LIMIT_PER_SECOND and SESSION_RATE_LIMIT_BURST above the rates searched: one session per camera):
# P50 at 5/s, sustainable rates on 1 and 4 cameras, 1.5x overload, 200 idle streams. bench/results/stream.json.
bench-stream: $(STAMP)
	@$(PY) -c "import httpx,sys; httpx.get('http://$(HOST):$(PORT)/health/ready', timeout=5).raise_for_status()" \
	  || { echo "bench-stream: no ready API at $(HOST):$(PORT); start it first (make run)"; exit 1; }
	$(PY) -m bench.stream --url http://$(HOST):$(PORT) $(BENCH_ARGS)

# The control center's map page with 5,000 registry hazards in headless Chromium (Debian's /usr/bin/chromium): first
# paint, first contentful paint and every hazard drawn, in ms from the navigation (docs/PERFORMANCE.md). Its own
# Redis and API on free ports; bench/results/map_paint.json. MAP_BENCH_ARGS="--hazards 20000 --runs 10" to vary.
MAP_BENCH_ARGS ?=
bench-map: $(STAMP) system-deps
	$(PY) -m bench.map_paint $(MAP_BENCH_ARGS)

# Hazards, not boxes: generated drives (3 vehicles per road) through the real service path and a private Redis;
# prints, last, count_error, duplicates, misses and map_error on held-out seeds (see scripts/eval_tracking.py).
# Then the registry's lifecycle on the same path: some hazards repaired, REGISTRY_PASSES_TO_FIX more drives, and
# repaired_flagged / unrepaired_flagged with the goal (scripts/eval_lifecycle.py; it exits 1 when the goal is not met).
eval-tracking: $(STAMP) system-deps
	PYTHONPATH=scripts $(PY) scripts/eval_tracking.py
	PYTHONPATH=scripts $(PY) scripts/eval_lifecycle.py

clean:
	./scripts/stack.sh down  # var/run records what is running: stop it before the records go
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache

# Operator stack (scripts/stack.sh): Redis if none answers, the API in the background (var/run/api.pid,
# its address in var/run/api.env, var/log/api.log) and one hazard-worker (var/run/worker.pid, worker.env,
# var/log/worker.log; metrics on WORKER_METRICS_PORT, default 9101). The API runs with EMBEDDED_WORKER=false:
# the worker takes the batch frames. `restart-web` and `restart-worker` restart one and leave the other running.
# `down` stops both with SIGTERM and only the Redis that `up` or `run` started (var/run/redis-<port>.pid);
# it is harmless when nothing runs.
up: $(STAMP) system-deps
	$(STACK_ADDR) VENV=$(VENV) ./scripts/stack.sh up

down:
	$(STACK_ADDR) ./scripts/stack.sh down

status:
	$(STACK_ADDR) ./scripts/stack.sh status

logs:
	./scripts/stack.sh logs

restart-web: $(STAMP)
	$(STACK_ADDR) VENV=$(VENV) ./scripts/stack.sh restart-web

restart-worker: $(STAMP)
	$(STACK_ADDR) VENV=$(VENV) ./scripts/stack.sh restart-worker

# --- Packaging ---------------------------------------------------------------------------------------------------
.PHONY: test-pythons lock

# The unit tests under each other supported Python on PATH (3.11 is `make test`'s), each in its own venv under
# build/ with a regular (non-editable) install of '.[dev]'. A Python that is not there is skipped; none at all fails.
PYTHONS ?= python3.12 python3.13
UNIT_TESTS := tests/unit tests/integration/services/inference/test_engine.py
test-pythons: system-deps
	@tested=0; for py in $(PYTHONS); do \
	  if ! $$py -c 'import sys' >/dev/null 2>&1; then echo "test-pythons: $$py not found, skipped"; continue; fi; \
	  venv=build/venv-$$(basename $$py); echo "test-pythons: $$($$py --version) in $$venv"; \
	  { test -x $$venv/bin/python || $$py -m venv $$venv; } && \
	  $$venv/bin/python -m pip install --quiet --upgrade pip && \
	  $$venv/bin/python -m pip install --quiet '.[dev]' && \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider $(UNIT_TESTS) || exit 1; \
	  tested=$$((tested + 1)); \
	done; \
	test $$tested -gt 0 || { echo "test-pythons: none of $(PYTHONS) found"; exit 1; }

# requirements.lock: the runtime dependency closure pinned for Python 3.11 (the image's), frozen from a clean venv
# that holds the project and its [project].dependencies only. Run after changing those dependencies.
LOCK_PYTHON ?= python3.11
LOCK_VENV := build/lock-venv
lock:
	$(LOCK_PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "requirements.lock is for Python 3.11"'
	rm -rf $(LOCK_VENV)
	$(LOCK_PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet .
	{ printf '%s\n' \
	  '# Exact runtime dependency closure of hazard-detection-api for CPython 3.11 on Linux x86_64: what the Docker image' \
	  '# installs (`pip install -r requirements.lock`, then the app'"'"'s wheel with --no-deps). Generated, do not edit by hand.' \
	  '# Regenerate after changing [project].dependencies in pyproject.toml:' \
	  '#   make lock' \
	  '# which installs `.` into a clean Python 3.11 venv and writes `pip freeze --exclude hazard-detection-api` here.'; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude hazard-detection-api; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
