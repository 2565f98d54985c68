import subprocess

import pytest


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


@pytest.fixture(scope="session")
def swarm_manager(docker_images):
    """The host's Docker Engine as a single-node Swarm manager (``docker swarm init`` when it is not
    in a swarm yet: a fresh machine is not), for the Swarm backend's and the exports' tests. The
    swarm is left in place after the session: leaving it would take the other tests' services down
    with it; ``.ci/clean-docker.sh`` leaves it, so CI starts as a fresh machine does."""
    state = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if state != "active":
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                       capture_output=True, text=True, check=True)
    return "unix:///var/run/docker.sock"
