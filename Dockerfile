# syntax=docker/dockerfile:1
# One image for every Python part of Scaleshop: user, catalog, worker and loadgen.
#   docker build -t scaleshop:dev .
#   docker run --rm -e AUTH_SECRET=... -p 8080:8080 -e BIND_HOST=0.0.0.0 scaleshop:dev python -m services.user
# The Helm chart (charts/scaleshop) starts each part with its command, as the local stack does.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: the dependencies in a virtualenv (compilers stay in this stage) ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt
# .dockerignore lets only requirements.txt, services/ and loadgen/ through.
COPY . /app
# Byte-code compiled now: the root filesystem is read-only at run time.
RUN python -m compileall -q /opt/venv /app

# ---- runtime: the interpreter, the virtualenv and the code; no compilers, no root ----------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="scaleshop" \
      org.opencontainers.image.description="Scaleshop services: python -m services.user|services.catalog|services.worker, python -m loadgen"
RUN groupadd --system --gid 10001 scaleshop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin scaleshop
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND_HOST=0.0.0.0 \
    PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# The chart sets the command per Deployment; this default runs the user service.
CMD ["python", "-m", "services.user"]
