# AegisKV node image: the request path compiled with mypyc, run as a non-root user.
#
#   docker build -t aegiskv .
#   docker run --rm -p 7700:7700 -p 7379:7379 -p 8080:8080 -e AEGIS_GOSSIP=off aegiskv
#
# The base image is a build argument: any Debian-family image with Python 3.10+ and the venv
# module works (python:3.12-slim by default; deploy/README.md builds one from Debian packages
# where no image registry is reachable). BUILD_PACKAGES is what the builder stage installs to
# compile: a C compiler, and the Python headers where the base has none (Debian's python3-dev).
#
# Stopping: SIGTERM drains the node (stop accepting, /ready turns 503, shard leadership handed
# off, in-flight requests finished) within --drain-timeout (AEGIS_DRAIN_TIMEOUT, 30s here). Give
# the engine a longer grace period than that, or it kills the node mid-drain:
# `docker run --stop-timeout 45`, compose's stop_grace_period, Kubernetes'
# terminationGracePeriodSeconds (deploy/ has all three).

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
ARG BUILD_PACKAGES="gcc libc6-dev"
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BUILD_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Wheels of aegiskv (compiled) and of its dependencies, at the versions the tests ran with
# (PIP_CONSTRAINT covers the isolated build environment too: mypy, setuptools). setuptools and
# wheel in the venv itself: crcmod ships only an sdist, which an older pip (Debian's) builds
# with the venv's own setuptools rather than an isolated environment.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT=/src/requirements/test-constraints.txt
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --upgrade pip setuptools wheel \
    && AEGISKV_COMPILE=1 /opt/build/bin/pip wheel --wheel-dir /wheels . \
    && python3 -c "import glob, sys; sys.exit(0 if glob.glob('/wheels/aegiskv-*-cp3*-*.whl') else 'aegiskv did not compile')"

FROM ${BASE_IMAGE}
# A system user that owns only the data directory; the code stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 aegis \
    && useradd --system --uid 10001 --gid aegis --home-dir /var/lib/aegiskv --no-create-home --shell /usr/sbin/nologin aegis \
    && mkdir -p /var/lib/aegiskv/data \
    && chown -R aegis:aegis /var/lib/aegiskv
COPY --from=builder /wheels /tmp/wheels
RUN python3 -m venv /opt/aegiskv \
    && /opt/aegiskv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels aegiskv \
    && rm -rf /tmp/wheels
ENV PATH=/opt/aegiskv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AEGIS_DATA_DIR=/var/lib/aegiskv/data \
    AEGIS_HEALTH_ADDR=0.0.0.0:8080 \
    AEGIS_LOG_FORMAT=json \
    AEGIS_DRAIN_TIMEOUT=30s
# native, RESP, gossip (TCP and UDP), cluster (leases and replication), health and /metrics.
EXPOSE 7700/tcp 7379/tcp 7701/tcp 7701/udp 7702/tcp 8080/tcp
# Declared after the chown above, so a new named volume starts owned by the aegis user.
VOLUME ["/var/lib/aegiskv/data"]
USER aegis
WORKDIR /var/lib/aegiskv
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["aegis"]
