# syntax=docker/dockerfile:1
# The Chartgate image. One image runs every process: `chartgate serve` (the sidecar) and
# `chartgate adapter`; the Helm chart in helm/chartgate passes the subcommand as arguments.
#
#   docker build -t chartgate:0.1.0 .
#
# The Rego policy library ships inside the package (sidecar/policy/rego, package data) and is the
# sidecar's default policy: a sidecar configured without `policy_dir` enforces it. Operators may
# mount their own policy directory and point `policy_dir` at it, and add operator data (kill
# switches, tenant settings) with `policy_data` (docs/deploy.md). No keys or configuration are
# baked in: keys come from the workdir volume or a mounted Secret, config from a ConfigMap.
# Health is checked by Kubernetes probes (grpc.health.v1), so the image has no HEALTHCHECK.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install Chartgate and its dependencies into a virtualenv ---------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/chartgate
ENV PATH=/opt/chartgate/bin:$PATH

WORKDIR /src
# Only what the package is built from (see .dockerignore as well). sidecar/ carries the policy
# library (sidecar/policy/rego); tests/test_installed.py holds this list to the package's inputs.
COPY pyproject.toml README.md ./
COPY chartgate ./chartgate
COPY sidecar ./sidecar
COPY adapters ./adapters
COPY console ./console
RUN pip install --no-cache-dir . \
    && python -m compileall -q /opt/chartgate \
    && chartgate --help > /dev/null
# An image without its default policy would deny every write, so the build fails instead unless
# the installed library is there and its own tests pass. Run from / so that only the installed
# package, never the /src copy, can be found.
WORKDIR /
RUN chartgate policy test

# --- runtime: the virtualenv on a clean base, as an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/chartgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric uid/gid, so Kubernetes runAsNonRoot can verify it (the chart uses 10001 too).
RUN groupadd --system --gid 10001 chartgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin chartgate \
    && mkdir -p /var/lib/chartgate \
    && chown 10001:10001 /var/lib/chartgate \
    && chmod 0700 /var/lib/chartgate

# Same base image and path as the build stage, so the virtualenv's interpreter links stay valid.
COPY --from=build /opt/chartgate /opt/chartgate

USER 10001:10001
WORKDIR /var/lib/chartgate
# The state directory (keys, ledger, audit log); mount a volume here or pass --workdir.
VOLUME ["/var/lib/chartgate"]
# The adapter's gRPC port. The sidecar listens on loopback only and needs no published port.
EXPOSE 50052

ENTRYPOINT ["chartgate"]
CMD ["--help"]
