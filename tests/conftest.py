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
