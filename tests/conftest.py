"""Shared fixtures: real etcd, real dockerds in network namespaces, a real registry.

Everything heavy is session-scoped and created lazily, only when a test asks for it. Tests
that need docker hosts are skipped when not root; any other failure to start fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.testing import DockerHost, EtcdServer, HostPool, Registry, cleanup_stale
from fleet.testing import images as _images
from fleet.testing.certs import TestPKI
from fleet.testing.fleetimage import ensure_fleet_image

TESTS_DIR = Path(__file__).resolve().parent
WEB_REPOSITORY = "fleet-test/web"
WEB_TAG = "v1"
WEB_INDEX = "hello from v1\n"
APP_LABEL = "fleet.app"
# A test that asks for fleet's image may be the session's first to build it: debootstrap of
# the base and pip, 2-5 minutes on a 2-core machine, all counted in the test's setup
# (pytest-timeout times setup and call together). Such a test gets that on top of its own.
IMAGE_BUILD_ALLOWANCE = 600

PoolFactory = Callable[[int], HostPool]
ImageLoader = Callable[[DockerHost], str]


def pytest_configure(config: pytest.Config) -> None:
    """No test reads or writes the user's own fleet config (contexts: `fleet up` saves
    one): each test process gets a config path of its own, empty to begin with."""
    import tempfile

    os.environ["FLEET_CLI_CONFIG"] = str(
        Path(tempfile.mkdtemp(prefix="fleet-config-")) / "config.toml"
    )
    os.environ.pop("FLEET_CONTEXT", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory: tests/integration -> integration, tests/e2e -> e2e; a test
    using the `fleet_image` fixture gets the image build's allowance on its timeout (a
    timeout of its own, marked on it, still comes first)."""
    default_timeout = float(config.getini("timeout") or 0)
    for item in items:
        if "fleet_image" in getattr(item, "fixturenames", ()) and default_timeout:
            item.add_marker(pytest.mark.timeout(default_timeout + IMAGE_BUILD_ALLOWANCE))
        try:
            top = item.path.resolve().relative_to(TESTS_DIR).parts[0]
        except (ValueError, IndexError):
            continue
        if top == "integration":
            item.add_marker(pytest.mark.integration)
        elif top == "e2e":
            item.add_marker(pytest.mark.e2e)


def ensure_image(
    host: DockerHost, repo: str = WEB_REPOSITORY, tag: str = WEB_TAG, index_html: str = WEB_INDEX
) -> str:
    """Import the busybox web image into `host`'s daemon unless it is there; return `repo:tag`."""
    _images.ensure_image(host.client(), repo, tag, index_html)
    return f"{repo}:{tag}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """fleet's own CA for the session; certificates are issued as tests ask for them."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A real etcd on free loopback ports for the whole session (`.endpoint`, `.url`)."""
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def docker_hosts() -> Iterator[PoolFactory]:
    """A factory `docker_hosts(n) -> HostPool`: one pool of n hosts per n, made on first use."""
    if os.geteuid() != 0:
        pytest.skip("docker hosts need root (network namespaces, bridges, dockerd)")
    cleanup_stale()  # leftovers of a crashed earlier run (only pools whose owner is dead)
    pools: dict[int, HostPool] = {}

    def get(count: int) -> HostPool:
        if count not in pools:
            pools[count] = HostPool(count).start()
        return pools[count]

    try:
        yield get
    finally:
        errors: list[Exception] = []
        for pool in pools.values():
            try:
                pool.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def single_host(docker_hosts: PoolFactory) -> DockerHost:
    """The one host ("h1") of a 1-host pool, for integration tests against a real dockerd."""
    return docker_hosts(1).hosts[0]


@pytest.fixture(scope="session")
def host_pool(docker_hosts: PoolFactory) -> HostPool:
    """A pool of 2 hosts (h1, h2) on one bridge, for e2e tests; distinct from `single_host`."""
    return docker_hosts(2)


@pytest.fixture(scope="session")
def busybox_image() -> ImageLoader:
    """A loader `busybox_image(host) -> "fleet-test/web:v1"` that imports the image if missing.

    The image serves "hello from v1" with busybox httpd on port 8080.
    """
    return ensure_image


@pytest.fixture(scope="session")
def fleet_image() -> ImageLoader:
    """A loader `fleet_image(host) -> "fleet:<version>"`: fleet's own image (the
    Dockerfile, on the local Debian base), built once per session by scripts/image.sh
    and copied into each host that asks (also tagged fleet:latest there)."""

    def load(host: DockerHost) -> str:
        return ensure_fleet_image(host.docker_url)

    return load


@pytest.fixture(scope="session")
def registry(host_pool: HostPool) -> Iterator[Registry]:
    """A real registry on the 2-host pool's gateway; every pool host trusts it over HTTP."""
    reg = Registry(host_pool.gateway).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def clean_host(single_host: DockerHost) -> Iterator[DockerHost]:
    """The single host; after the test, removes its containers labelled `fleet.app`."""
    yield single_host
    single_host.remove_all_containers(label=APP_LABEL)


@pytest.fixture
def clean_pool(host_pool: HostPool) -> Iterator[HostPool]:
    """The 2-host pool; after the test, heals cut networks and removes `fleet.app` containers."""
    yield host_pool
    for host in host_pool.hosts:
        host.restore_network()
        if host.daemon_pid is not None:
            host.remove_all_containers(label=APP_LABEL)
