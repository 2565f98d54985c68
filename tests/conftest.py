def pytest_configure(config):
    config.addinivalue_line("markers", "docker: needs a running Docker Engine")
