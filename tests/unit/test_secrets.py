"""Secrets: encryption at rest and its key rotation, the HMAC audit trail, the control area's
rules (reveal for root only, no value in any answer), file delivery on the fake driver, the
manifest's `secrets:` check and the CLI that never takes a value from argv."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from cryptography.fernet import Fernet, InvalidToken

from mariposa.control import Caller
from mariposa.control.redact import REDACTED, forget_all, redact
from mariposa.errors import BadRequest, Conflict, Forbidden, InternalError, NotFound
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.store import secrets as secret_store
from mariposa.vault import KeyRing, SecretKeyError, Vault
from mariposa.vault.delivery import DeliveryError, SecretFiles, filesystem_of, owner_of
from tests.unit.conftest import ROOT, Core

CANARY = "canary-7f3a9c-s3cr3t"
MEMBER = Caller(transport="unix", uid=1000, gid=4242, pid=3)  # may use the socket, is not root


@pytest.fixture
def shm(tmp_path):
    path = Path("/dev/shm") / f"mariposa-unit-{os.getpid()}-{tmp_path.name}"
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vaulted(core: Core, tmp_path, shm):
    core.ctx.vault = Vault(core.ctx.store, KeyRing(tmp_path / "keys" / "secret.key"))
    core.ctx.secret_files = SecretFiles(shm)
    yield core
    forget_all()


# -- the key file ---------------------------------------------------------------------------------


def test_key_file_is_made_on_first_use_0600_and_round_trips(tmp_path):
    path = tmp_path / "etc" / "secret.key"
    ring = KeyRing(path)
    assert not path.exists()
    token = ring.encrypt(CANARY.encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and CANARY not in token
    assert KeyRing(path).decrypt(token) == CANARY.encode()  # a new reader of the same file
    with pytest.raises(SecretKeyError, match="does not open"):
        KeyRing(tmp_path / "other.key").decrypt(KeyRing(tmp_path / "other.key").encrypt(b"x")[:-4] + "AAAA")


def test_missing_key_file_is_an_error_never_a_new_key(tmp_path):
    with pytest.raises(SecretKeyError, match="missing"):
        KeyRing(tmp_path / "gone.key").decrypt("gAAAA")
    assert not (tmp_path / "gone.key").exists()


def test_systemd_credential_is_used_when_given_and_never_written(tmp_path, monkeypatch):
    (tmp_path / "creds").mkdir()
    key = Fernet.generate_key()
    (tmp_path / "creds" / "mariposa-secret-key").write_bytes(key + b"\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    ring = KeyRing.configured(str(tmp_path / "ignored.key"))
    assert ring.path == tmp_path / "creds" / "mariposa-secret-key"
    assert Fernet(key).decrypt(ring.encrypt(b"v").encode()) == b"v"
    with pytest.raises(SecretKeyError, match="systemd-creds"):
        ring.add_new_key()


async def test_rotate_key_reencrypts_everything_and_drops_the_old_key(vaulted: Core, tmp_path):
    c, vault = vaulted.control, vaulted.ctx.vault
    for n in range(5):
        await c.secrets.set(ROOT, "p", f"s{n}", f"{CANARY}-{n}")
    old_key = vault.keys.path.read_bytes().strip()
    old_tokens = await vaulted.ctx.store.call(lambda db: [r[0] for r in db.execute("SELECT token FROM secrets")])
    result = await c.secrets.rotate_key(ROOT)
    assert result["reencrypted"] == 6  # five secrets and the audit salt
    text = vault.keys.path.read_bytes()
    assert old_key not in text and len(text.split()) == 1  # the old key is gone from the file
    assert stat.S_IMODE(vault.keys.path.stat().st_mode) == 0o600
    new_tokens = await vaulted.ctx.store.call(lambda db: [r[0] for r in db.execute("SELECT token FROM secrets")])
    assert set(new_tokens).isdisjoint(old_tokens)
    for token in new_tokens:
        with pytest.raises(InvalidToken):
            Fernet(old_key).decrypt(token.encode())
    fresh = Vault(vaulted.ctx.store, KeyRing(vault.keys.path))  # a restarted daemon reads the new file
    assert await fresh.get("project", "p", "s3") == f"{CANARY}-3".encode()
    [event] = [e for e in await c.events.list(ROOT) if e["type"] == "secret.rotate-key"]
    assert "5 secrets" not in event["message"] and "6 secrets re-encrypted" in event["message"]


async def test_a_failed_reencryption_keeps_every_secret_readable(vaulted: Core, monkeypatch):
    c, vault = vaulted.control, vaulted.ctx.vault
    await c.secrets.set(ROOT, "p", "db", CANARY)

    def broken(db, rotate):
        db.execute("UPDATE secrets SET token = 'x'")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(secret_store, "reencrypt", broken)
    with pytest.raises(InternalError):  # a bug's error: its text stays in the log
        await c.secrets.rotate_key(ROOT)
    assert len(vault.keys.path.read_bytes().split()) == 2  # both keys kept: the old tokens need the old one
    assert await Vault(vaulted.ctx.store, KeyRing(vault.keys.path)).get("project", "p", "db") == CANARY.encode()


# -- the control area -----------------------------------------------------------------------------


async def test_set_audits_an_hmac_of_the_value_never_the_value(vaulted: Core):
    c = vaulted.control
    first = await c.secrets.set(ROOT, "p", "db_password", CANARY)
    again = await c.secrets.set(ROOT, "p", "db_password", CANARY)
    other = await c.secrets.set(ROOT, "p", "db_password", CANARY + "x")
    assert (first["version"], again["version"], other["version"]) == (1, 2, 3)
    assert first["hmac"] == again["hmac"] != other["hmac"]
    salt = await vaulted.ctx.vault.salt()
    assert first["hmac"] == hmac.new(salt, CANARY.encode(), hashlib.sha256).hexdigest()
    assert first["hmac"] != hashlib.sha256(CANARY.encode()).hexdigest()  # salted: no guessing from events
    events = [e for e in await c.events.list(ROOT) if e["type"] == "secret.set"]
    assert len(events) == 3 and all(first["hmac"] in e["message"] for e in events[:2])
    db_bytes = Path(vaulted.ctx.store.path).read_bytes() + Path(str(vaulted.ctx.store.path) + "-wal").read_bytes()
    assert CANARY.encode() not in db_bytes and salt not in db_bytes  # the salt is kept encrypted too
    assert CANARY not in repr(await c.events.list(ROOT)) + repr(await c.secrets.list(ROOT, "p"))


async def test_list_shows_names_versions_who_and_when_only(vaulted: Core):
    await vaulted.control.secrets.set(ROOT, "p", "a", CANARY)
    [row] = await vaulted.control.secrets.list(ROOT, "p")
    assert set(row) == {"name", "version", "created", "created_by", "updated", "updated_by"}
    assert row["name"] == "a" and row["updated_by"] == "uid=0"
    assert await vaulted.control.secrets.list(ROOT, "q") == []  # another project's are its own


async def test_reveal_needs_secret_reveal_by_name_and_is_audited(vaulted: Core):
    c = vaulted.control
    await c.access.user_add(ROOT, "dev", [1000])
    await c.access.grant(ROOT, "dev", "developer", org="*")
    await c.secrets.set(MEMBER, "p", "db", CANARY)
    with pytest.raises(Forbidden, match="permission denied: secret:reveal on"):
        await c.secrets.reveal(MEMBER, "p", "db")
    await c.access.grant(ROOT, "dev", "admin", org="*")
    assert (await c.secrets.reveal(MEMBER, "p", "db"))["value"] == CANARY
    await c.access.revoke(ROOT, "dev", "admin", org="*")
    assert (await c.secrets.reveal(ROOT, "p", "db"))["value"] == CANARY
    assert [e["author"] for e in await c.events.list(ROOT) if e["type"] == "secret.reveal"] == ["dev", "uid=0"]
    with pytest.raises(NotFound):
        await c.secrets.reveal(ROOT, "p", "nope")


async def test_bad_names_and_values_are_refused(vaulted: Core):
    c = vaulted.control
    for name in ("", "../x", "a/b", ".hidden", "x" * 200):
        with pytest.raises(BadRequest):
            await c.secrets.set(ROOT, "p", name, "v")
    for value in ("", None, 5, "x" * (600 * 1024)):
        with pytest.raises(BadRequest):
            await c.secrets.set(ROOT, "p", "ok", value)
    assert await c.secrets.list(ROOT, "p") == []


def test_redaction_scrubs_every_known_value_and_lets_only_a_reveal_through():
    from mariposa.control.redact import Revealed, remember

    try:
        remember(CANARY.encode())
        assert redact({"msg": f"log line with {CANARY} inside", "n": [CANARY]}) == {
            "msg": f"log line with {REDACTED} inside", "n": [REDACTED]}
        assert redact({"value": Revealed(CANARY)}) == {"value": CANARY}
        assert CANARY not in repr(Revealed(CANARY))
    finally:
        forget_all()


# -- use: the manifest and delivery ---------------------------------------------------------------

SERVICE = """\
services:
  db:
    image: busybox
    command: sleep 1000
    user: "1000:1000"
    secrets: [db_password]
"""


def test_unknown_secret_names_the_line_and_column():
    with pytest.raises(ManifestError) as info:
        parse_manifest(SERVICE.replace("[db_password]", "[db_password, nope]"), "p.yaml",
                       secrets=frozenset({"db_password"}))
    [p] = info.value.problems
    assert (p.line, p.column) == (6, 28) and "unknown secret 'nope'" in p.message
    assert "p.yaml:6:28" in str(info.value)
    assert parse_manifest(SERVICE, "p.yaml", secrets=frozenset({"db_password"})).services[0].secrets == (
        "db_password",)


def test_secret_files_need_a_numeric_user():
    with pytest.raises(ManifestError, match="UID or UID:GID"):
        parse_manifest(SERVICE.replace('"1000:1000"', "postgres"), secrets=frozenset({"db_password"}))
    assert owner_of(None) == (0, 0) and owner_of("1000") == (1000, 0) and owner_of("7:8") == (7, 8)
    with pytest.raises(DeliveryError):
        owner_of("postgres")


async def test_a_version_may_not_name_an_unset_secret_and_rm_is_refused_while_used(vaulted: Core):
    c = vaulted.control
    with pytest.raises(Exception) as info:
        await c.projects.add(ROOT, "p", SERVICE, "p.yaml")
    assert "unknown secret 'db_password'" in str(info.value.details)  # type: ignore[attr-defined]
    assert await c.projects.list(ROOT) == []
    await c.secrets.set(ROOT, "p", "db_password", CANARY)  # before the project exists: it is by name
    added = await c.projects.add(ROOT, "p", SERVICE, "p.yaml")
    await vaulted.settle(added)
    with pytest.raises(Conflict, match="used by service db"):
        await c.secrets.remove(ROOT, "p", "db_password")


async def test_instances_get_their_files_before_they_start_and_changes_in_place(vaulted: Core, shm):
    c = vaulted.control
    await c.secrets.set(ROOT, "p", "db_password", CANARY)
    added = await c.projects.add(ROOT, "p", SERVICE.replace("sleep 1000", "sleep 1000\n    scale: 2"), "p.yaml")
    await vaulted.settle(added)
    boxes = [b for b in vaulted.driver.runtime.boxes.values() if b.state == "running"]
    assert len(boxes) == 2
    for box in boxes:
        directory = Path(box.secrets_dir)
        assert directory.is_relative_to(shm) and filesystem_of(directory) == "tmpfs"
        st = (directory / "db_password").stat()
        assert (directory / "db_password").read_text() == CANARY
        assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (1000, 1000)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o500 and directory.stat().st_uid == 1000
        assert CANARY not in repr(box.labels)
    changed = await c.secrets.set(ROOT, "p", "db_password", "rotated-value")
    assert changed["instances_updated"] == 2
    assert all((Path(b.secrets_dir) / "db_password").read_text() == "rotated-value" for b in boxes)
    await vaulted.settle(await c.services.scale(ROOT, "p", "db", 0))
    for _ in range(50):
        if not any(Path(b.secrets_dir).exists() for b in boxes):
            break
        await trio.sleep(0.1)
    assert not any(Path(b.secrets_dir).exists() for b in boxes)  # removed instances take their files


def test_delivery_refuses_a_directory_that_is_not_a_tmpfs(tmp_path, monkeypatch):
    from mariposa.vault import delivery

    assert filesystem_of(Path("/dev/shm")) == "tmpfs" and filesystem_of(Path("/proc/self")) == "proc"
    monkeypatch.setattr(delivery, "filesystem_of", lambda path: "ext4")
    with pytest.raises(DeliveryError, match="not a tmpfs"):
        SecretFiles(tmp_path).deliver("p", "i1", {"a": b"v"}, None)
    assert not (tmp_path / "secrets" / "p").exists()


# -- the CLI --------------------------------------------------------------------------------------


class _Client:
    sent: list = []

    def __init__(self, socket, **_):
        pass

    def request(self, method, path, *, json=None, params=None):
        _Client.sent.append((method, path, json))
        return {"name": path.rsplit("/", 1)[1], "version": 1}


def test_cli_reads_the_value_from_stdin_or_a_file_never_argv(monkeypatch, tmp_path):
    from mariposa.cli import main

    monkeypatch.setattr(main, "Client", _Client)
    _Client.sent.clear()
    result = CliRunner().invoke(main.cli, ["-j", "p", "secret", "set", "db", CANARY], input="x")
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()
    assert _Client.sent == []
    result = CliRunner().invoke(main.cli, ["-j", "p", "secret", "set", "db"], input=CANARY)
    assert result.exit_code == 0, result.output
    (tmp_path / "v").write_text(CANARY + "-file")
    assert CliRunner().invoke(main.cli, ["-j", "p", "secret", "set", "db2", "--from-file", str(tmp_path / "v")]
                              ).exit_code == 0
    assert _Client.sent == [("PUT", "/v1/projects/p/secrets/db", {"value": CANARY}),
                            ("PUT", "/v1/projects/p/secrets/db2", {"value": CANARY + "-file"})]
    assert CANARY not in result.output
    params = [p.name for p in main.secret_set.params if isinstance(p, main.click.Argument)]
    assert params == ["name"]  # no argument that could carry a value


async def test_a_restarted_instance_gets_its_files_again_and_sweep_removes_the_orphans(vaulted: Core, shm):
    import shutil

    c = vaulted.control
    await c.secrets.set(ROOT, "p", "db_password", CANARY)
    await vaulted.settle(await c.projects.add(ROOT, "p", SERVICE, "p.yaml"))
    [box] = [b for b in vaulted.driver.runtime.boxes.values() if b.state == "running"]
    instance_id = box.labels["io.mariposa.instance"]
    shutil.rmtree(box.secrets_dir)  # a host reboot empties the tmpfs
    vaulted.driver.kill(instance_id, 1)
    for _ in range(100):
        if box.state == "running" and Path(box.secrets_dir).exists():
            break
        await trio.sleep(0.1)
    assert (Path(box.secrets_dir) / "db_password").read_text() == CANARY  # restarted in place, files back

    files = vaulted.ctx.secret_files
    orphan = await trio.to_thread.run_sync(files.deliver, "p", "gone-instance", {"x": b"y"}, None)
    assert await trio.to_thread.run_sync(files.sweep, {instance_id}) == 1
    assert not Path(orphan).exists() and Path(box.secrets_dir).exists()
