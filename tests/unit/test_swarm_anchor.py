"""The overlay anchor's name, labels and image (mariposa/swarm/anchor.py): the anchor must never
look like an instance to the Docker driver, which lists containers by ``io.mariposa.owner``."""

from __future__ import annotations

import io
import tarfile

import pytest

from mariposa.drivers.base import DriverError
from mariposa.model import LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, LABEL_PROJECT_NAME, LABEL_SERVICE
from mariposa.swarm import anchor


def test_the_name_carries_the_project_and_its_id_prefix():
    assert anchor.anchor_name("shop", "0123456789abcdef") == "mariposa-anchor-shop-01234567"


def test_the_labels_are_the_anchors_own_not_an_instances():
    labels = anchor.anchor_labels("alice", "0123456789abcdef", "shop")
    assert labels[anchor.LABEL_ANCHOR] == "alice"
    assert labels[anchor.LABEL_ANCHOR_PROJECT] == "0123456789abcdef"
    assert not {LABEL_OWNER, LABEL_PROJECT, LABEL_PROJECT_NAME, LABEL_SERVICE, LABEL_INSTANCE} & set(labels)


def test_the_image_is_busybox_with_sh_and_sleep_linked_to_it(tmp_path):
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF-not-really")
    with tarfile.open(fileobj=io.BytesIO(anchor.image_tar(str(fake)))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"bin", "bin/busybox", "bin/sh", "bin/sleep"}
        assert members["bin/busybox"].mode == 0o755
        assert tar.extractfile("bin/busybox").read() == b"\x7fELF-not-really"
        assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert anchor.COMMAND[0] == "/bin/sh"


def test_only_a_static_busybox_will_do(tmp_path, monkeypatch):
    assert anchor.is_static(anchor.find_busybox())  # .ci/setup.sh installs busybox-static
    assert not anchor.is_static("/bin/ls")  # dynamically linked: it names its loader
    text = tmp_path / "busybox"
    text.write_text("#!/bin/sh\n")
    assert not anchor.is_static(str(text))
    monkeypatch.setattr(anchor.shutil, "which", lambda name: None)
    monkeypatch.setattr(anchor, "BUSYBOX_PATHS", (str(text), "/bin/ls"))
    with pytest.raises(DriverError, match="busybox-static"):
        anchor.find_busybox()
