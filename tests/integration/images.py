"""Every image the tests run, built here from what is on the host (no registry), idempotently:
the example busybox image (examples/build-image.sh, the same script the examples use), and one
that adds the host's openssl binary and its libraries, for a real self-signed HTTPS server in a
container. A session fixture (tests/conftest.py) calls ensure_images(); with the images already
there it costs two `docker image inspect`s. `.ci/run` removes them first, so CI builds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.integration.harness import IMAGE, ROOT, docker

OPENSSL_IMAGE = "mariposa-test/openssl:latest"
# Written into each image's Comment, so `.ci/clean-docker.sh` knows the suite's images once untagged.
MARKER = "built by mariposa"


def ensure_images() -> None:
    ensure_image()
    ensure_openssl_image()


def ensure_image() -> None:
    subprocess.run(["bash", str(ROOT / "examples" / "build-image.sh"), IMAGE], check=True)


def _exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(path)
    return libs


def ensure_openssl_image() -> None:
    if _exists(OPENSSL_IMAGE):
        return
    ensure_image()
    openssl = shutil.which("openssl")
    if not openssl:
        raise AssertionError("openssl not found on the host: apt-get install openssl (tests/run.sh does)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        # start from the busybox image's filesystem
        cid = docker("create", IMAGE, "true").strip()
        try:
            export = Path(tmp) / "base.tar"
            subprocess.run(["docker", "export", "-o", str(export), cid], check=True)
        finally:
            docker("rm", cid, check=False)
        root.mkdir()
        with tarfile.open(export) as tar:
            tar.extractall(root, filter="tar") if hasattr(tarfile, "data_filter") else tar.extractall(root)
        for path in [openssl, *_libraries(openssl), "/usr/lib/ssl/openssl.cnf"]:
            real = os.path.realpath(path)
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, dest)
        layer = Path(tmp) / "rootfs.tar"
        with tarfile.open(layer, "w") as tar:
            tar.add(root, arcname=".")
        subprocess.run(
            ["docker", "import", "--message", f"{MARKER} tests/integration/images.py",
             "--change", "ENV PATH=/bin:/sbin:/usr/bin", "--change", "ENV OPENSSL_CONF=/usr/lib/ssl/openssl.cnf",
             str(layer), OPENSSL_IMAGE],
            check=True, capture_output=True,
        )
    print(f"built {OPENSSL_IMAGE}")
