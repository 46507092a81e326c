# fleet's image: the control plane, the agent and the CLI in one, entrypoint `fleet`.
#
# Build it with `make image`: that builds the wheels on the host (build/wheels, with
# the tested pins of constraints.txt) and runs this file, which needs no network.
# By hand: `make wheels && docker build --build-arg BASE=python:3.11-slim -t fleet .`
# Any base with Python 3.11 and python3 -m venv works; scripts/base-image.sh makes one
# from Debian's packages (fleet-base:bookworm-2) where no image registry is reachable.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# The wheels were built for the host's Python; a base with another one cannot use them.
ARG PYTHON=3.11
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(None if v == '${PYTHON}' else f'the base image has Python {v}; build/wheels holds \
wheels for Python ${PYTHON}: use a python:${PYTHON} base (BASE=...)')"
COPY build/wheels /wheels
COPY constraints.txt /constraints.txt
# No index: only the wheels made on the host. pip and setuptools then leave the venv
# (nothing installs into it at run time), and so do the test suites some wheels ship
# (numpy's alone is 17 MB).
RUN python3 -m venv /opt/fleet \
    && /opt/fleet/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /wheels -c /constraints.txt 'fleet-orchestrator[server]' \
    && /opt/fleet/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
    && find /opt/fleet/lib -depth -type d -name tests -exec rm -rf {} + \
    && rm -f /opt/fleet/bin/activate* /opt/fleet/bin/Activate.ps1

FROM ${BASE}
ARG VERSION=unknown
LABEL org.opencontainers.image.title="fleet" \
      org.opencontainers.image.description="fleet: control plane, agent and CLI (entrypoint fleet)" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/fleet /opt/fleet
# HAProxy for edge hosts (agent --ingress): Debian's 2.6, run by the agent in a sibling
# container from this image. fleet-base has it already; another Debian-based base gets
# it from its apt sources (the one step of this build that may need the network).
RUN command -v haproxy >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends haproxy \
        && rm -rf /var/lib/apt/lists/*; }
# A user of its own for the control plane and the CLI; the agent runs as root
# (--user 0), since it talks to the Docker socket and enters the host's namespaces.
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --home-dir /var/lib/fleet \
        --no-create-home --shell /usr/sbin/nologin fleet \
    && mkdir -p /etc/fleet /var/lib/fleet \
    && chown fleet:fleet /var/lib/fleet
# An agent run from this image is in a container: its host commands (upgrade-hosts
# --command) run in a sibling container that enters the host's namespaces, since a
# child process would run in the agent's container and die with it. So does an edge's
# HAProxy.
ENV PATH=/opt/fleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLEET_HOST_COMMANDS_IN=container \
    FLEET_EDGE_PROXY_IN=container
USER fleet
WORKDIR /var/lib/fleet
ENTRYPOINT ["/opt/fleet/bin/fleet"]
CMD ["--help"]
