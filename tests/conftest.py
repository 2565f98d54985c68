import subprocess

import pytest

# the real three-node Swarm of Docker-in-Docker nodes, one per session for every module that asks
from tests.swarmnodes import three_node_swarm  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line("markers", "docker: needs a running Docker Engine")


@pytest.fixture(scope="session")
def docker_images():
    """A reachable Docker Engine with every image the tests use built (tests/integration/images.py):
    nothing a test runs is expected to be on the machine already. Idempotent and quick when the
    images are there; tests/integration uses it for every test, other suites on Docker ask for it."""
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("Docker Engine not reachable: start dockerd (tests/run.sh does)", pytrace=False)
    from tests.integration.images import ensure_images

    ensure_images()


@pytest.fixture(scope="session")
def registries(docker_images, tmp_path_factory):
    """Two real registries (tests/registry.py): one open, one with htpasswd auth, with the test
    image pushed to each and untagged locally, so it exists only there."""
    from tests.integration.harness import IMAGE
    from tests.registry import start

    regs = start(tmp_path_factory.mktemp("registries"))
    try:
        regs.push(IMAGE, regs.ref(regs.open_host, "busybox"))
        regs.push(IMAGE, regs.ref(regs.auth_host, "busybox"))
        yield regs
    finally:
        regs.close()
