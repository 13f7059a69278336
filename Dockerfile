# syntax=docker/dockerfile:1
# Hazard Detection API image: the app installed as a package (its wheel, assets included) with the pinned runtime
# dependencies in a venv built in a throwaway stage, plus the committed OpenVINO model, in a slim, non-root runtime.
#   docker build -t hazard-api .
#   docker run --rm -p 8000:8000 -e REDIS_URL=redis://redis-host:6379/0 hazard-api

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
# The exact runtime closure (requirements.lock, `make lock`) in its own layer: code changes do not reinstall it.
# Only runtime dependencies: the dev and train extras (pytest, torch, ultralytics) never enter the image.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r requirements.lock
# The app's wheel, installed without dependencies: everything it needs is pinned above.
COPY pyproject.toml README.md ./
COPY app/ ./app/
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /build/dist . \
 && /opt/venv/bin/pip install --no-deps /build/dist/*.whl

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    LOG_JSON=true \
    MODEL_DIR=/srv/hazard-api/models/best0408_openvino_model \
    STORAGE_DIR=/srv/hazard-api/var/uploads \
    SPOOL_DIR=/srv/hazard-api/var/spool
# A fixed numeric uid: Kubernetes can only verify runAsNonRoot against a numeric USER.
RUN groupadd --system --gid 10001 hazard \
 && useradd --system --uid 10001 --gid hazard --home-dir /srv/hazard-api --no-create-home \
      --shell /usr/sbin/nologin hazard
WORKDIR /srv/hazard-api
# The venv holds the installed app (bytecode compiled by pip, so the root filesystem can be read-only): no source here.
COPY --from=builder /opt/venv /opt/venv
COPY models/best0408_openvino_model/ ./models/best0408_openvino_model/
RUN mkdir -p var/uploads var/spool \
 && chown -R 10001:10001 var
USER 10001:10001

EXPOSE 8000
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
# hazard-api (app/entrypoints/api.py): uvicorn with one worker (OpenVINO already spreads one inference over every core,
# MODEL_INFERENCE_THREADS), no access log, 10 s graceful shutdown, at most HTTP_MAX_CONNECTIONS connections with
# request heads due within HTTP_HEADER_TIMEOUT_SECONDS. It raises its RLIMIT_NOFILE to fit them (Docker's default
# hard limit, 1048576, allows it; `docker run --ulimit nofile=2048:2048` is the least that fits the default 1000). It is PID 1 and gets SIGTERM itself; the lifespan
# then drains for SHUTDOWN_DRAIN_SECONDS, and a completed stop exits 0.
CMD ["hazard-api", "--host", "0.0.0.0", "--port", "8000"]
