"""Test images built locally (no registry): the example busybox image, plus one that adds the
host's openssl binary and its libraries, for a real self-signed HTTPS server in a container."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.integration.harness import IMAGE, docker, ensure_image

OPENSSL_IMAGE = "mariposa-test/openssl:latest"


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(path)
    return libs


def ensure_openssl_image() -> str:
    if subprocess.run(["docker", "image", "inspect", OPENSSL_IMAGE], capture_output=True).returncode == 0:
        return OPENSSL_IMAGE
    ensure_image()
    openssl = shutil.which("openssl")
    if not openssl:
        raise AssertionError("openssl not found on the host: apt-get install openssl")
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
            ["docker", "import", "--change", "ENV PATH=/bin:/sbin:/usr/bin", "--change", "ENV OPENSSL_CONF=/usr/lib/ssl/openssl.cnf",
             str(layer), OPENSSL_IMAGE],
            check=True, capture_output=True,
        )
    return OPENSSL_IMAGE
