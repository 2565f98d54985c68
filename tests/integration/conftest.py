import pytest

from tests.integration.harness import Daemon


@pytest.fixture(scope="session", autouse=True)
def docker_engine(docker_images):
    """Every integration test runs on a reachable Docker Engine with the suite's own images."""


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.cleanup()
