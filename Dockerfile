# syntax=docker/dockerfile:1
# One image for every Python part of Scaleshop: user, catalog, worker and loadgen.
#   make wheelhouse && docker build -t scaleshop:dev .
#   docker run --rm -e AUTH_SECRET=... -p 8080:8080 scaleshop:dev python -m services.user
# The Helm chart (charts/scaleshop) starts each part with its command, as the local stack does.
#
# The build needs no network (`docker build --network none` works): the Python packages come
# from a wheelhouse made on the host (`make wheelhouse`: pip wheel -r requirements.txt into
# .cache/wheelhouse), so no package index, proxy or certificate is needed inside the build.
# BASE_IMAGE: the base, any Debian-based Python 3.11 image with `python3 -m venv` (default: the
# official one, pinned); `make images` uses the one made here from Debian's packages
# (scaleshop/python:3.11-bookworm, k8s/images/python).

ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# ---- build: the dependencies in a virtualenv, from the wheelhouse only ----------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
COPY .cache/wheelhouse/ /tmp/wheelhouse/
RUN pip install --no-index --find-links /tmp/wheelhouse -r /tmp/requirements.txt
# .dockerignore lets only requirements.txt, services/, loadgen/ and the wheelhouse through.
COPY services/ /app/services/
COPY loadgen/ /app/loadgen/
# Byte-code compiled now: the root filesystem is read-only at run time.
RUN python -m compileall -q /opt/venv /app

# ---- runtime: the interpreter, the virtualenv and the code; no pip cache, no root ------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="scaleshop" \
      org.opencontainers.image.description="Scaleshop services: python -m services.user|services.catalog|services.worker, python -m loadgen"
RUN groupadd --system --gid 10001 scaleshop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin scaleshop
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
# MPLCONFIGDIR: matplotlib (loadgen's reports) keeps its cache in /tmp, writable on a read-only root.
# PYTHONPATH: `python -m services.…` and `python -m loadgen` work from any working directory (the
# loadgen Job runs in its results folder).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIND_HOST=0.0.0.0 \
    PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# The chart sets the command per Deployment; this default runs the user service.
CMD ["python", "-m", "services.user"]
