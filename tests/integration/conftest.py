import subprocess

import pytest

from tests.integration.harness import Daemon, ensure_image


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("Docker Engine not reachable: start dockerd (tests/run.sh does)", pytrace=False)
    ensure_image()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.cleanup()
