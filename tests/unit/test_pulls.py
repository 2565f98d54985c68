"""Image pulls when a version is made (issue 12), on the fake runtime and its fake registry: the
``pull`` option (validated with line:column), each policy, credentials kept 0600 and never shown,
and a refused pull that changes nothing."""

from __future__ import annotations

import json

import pytest
import trio

from mariposa.drivers.base import PullProgress, RegistryAuth
from mariposa.errors import BadRequest, MariposaError, NotFound, RegistryRefused
from mariposa.registries import Credentials, normalize_host, registry_of, split_reference
from tests.unit.conftest import ROOT, Core
from tests.unit.test_manifest import service, service_problem

PRIVATE = "registry.example:5000/team/app:1"
SECRET = "correct-horse-battery"


def manifest(image: str, pull: str | None = None) -> str:
    return f"services:\n  web:\n    image: {image}\n" + (f"    pull: {pull}\n" if pull else "")


# ---- the manifest option -------------------------------------------------------------------------

def test_pull_defaults_to_missing_and_takes_compose_words():
    assert service("image: busybox").pull == "missing"
    assert service("image: busybox\npull: always").pull == "always"
    assert service("image: busybox\npull: never").pull == "never"


def test_pull_policy_does_not_replace_instances():
    """It says how a version fetches the image, not what an instance is."""
    assert service("image: busybox\npull: always").spec_hash == service("image: busybox").spec_hash


@pytest.mark.parametrize(("body", "where", "message"), [
    ("pull: sometimes", (4, 11), "unknown pull policy 'sometimes' (expected one of missing, always, never)"),
    ("pull: alway", (4, 11), "did you mean 'always'?"),
    ("pull: [always]", (4, 11), "expected one of missing, always, never, got a list"),
    ("pull_policy: always", (4, 5), "unknown option 'pull_policy'; did you mean 'pull'?"),
])
def test_a_bad_pull_names_line_and_column(body, where, message):
    p = service_problem("image: busybox\n" + body)
    assert (p.line, p.column) == where and message in p.message, p


# ---- references and the credentials file ---------------------------------------------------------

@pytest.mark.parametrize(("image", "host", "repo", "tag"), [
    ("busybox", "docker.io", "busybox", "latest"),
    ("library/busybox:1.36", "docker.io", "library/busybox", "1.36"),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "127.0.0.1:5000/a/b", "latest"),
    ("localhost/x:2", "localhost", "localhost/x", "2"),
    ("ghcr.io/o/r@sha256:abc", "ghcr.io", "ghcr.io/o/r", "sha256:abc"),
    ("index.docker.io/library/x:1", "docker.io", "index.docker.io/library/x", "1"),
])
def test_references_name_their_registry_and_tag(image, host, repo, tag):
    assert registry_of(image) == host and split_reference(image) == (repo, tag)


def test_hosts_are_normalized_and_garbage_refused():
    assert normalize_host("https://Registry.Example:5000/") == "registry.example:5000"
    assert normalize_host("https://index.docker.io/v1/") == "docker.io"
    for bad in ("a b", "a/b", "", "x:99999999"):
        with pytest.raises(ValueError):
            normalize_host(bad)


async def test_logins_are_secrets_encrypted_at_rest_and_a_legacy_file_is_migrated(tmp_path):
    from mariposa.store.db import Store
    from mariposa.vault import KeyRing, Vault

    store = await trio.to_thread.run_sync(Store, tmp_path / "mariposa.db")
    vault = Vault(store, KeyRing(tmp_path / "secret.key"))
    legacy = tmp_path / "registries.json"
    legacy.write_text(json.dumps({"registry.example:5000": {"username": "alice", "password": SECRET}}))
    creds = Credentials(vault, legacy)
    assert await creds.load() == 1 and not legacy.exists()  # moved, and no password left in the clear
    again = Credentials(Vault(store, KeyRing(tmp_path / "secret.key")), legacy)  # a restarted daemon
    assert await again.load() == 0
    assert again.auth_for(PRIVATE) == RegistryAuth("registry.example:5000", "alice", SECRET)
    assert again.auth_for("busybox") is None
    assert again.listing() == [{"host": "registry.example:5000", "username": "alice"}]
    assert SECRET not in repr(again.auth_for(PRIVATE)) + repr(again.listing())
    await again.put(RegistryAuth("docker.io", "bob", SECRET + "2"), "uid=0")
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert SECRET.encode() not in on_disk
    assert await again.remove("registry.example:5000") and not await again.remove("registry.example:5000")
    third = Credentials(Vault(store, KeyRing(tmp_path / "secret.key")))
    await third.load()
    assert third.listing() == [{"host": "docker.io", "username": "bob"}]
    legacy.write_text('{"registry.example:5000": {"username": "alice", "password": "' + SECRET)  # cut short
    with pytest.raises(MariposaError, match="is not a registry credentials file") as info:
        await Credentials(vault, legacy).load()
    assert SECRET not in info.value.message
    store.close()


# ---- the control layer on the fake runtime -------------------------------------------------------

async def test_an_image_only_in_the_registry_is_pulled_and_pinned(core: Core):
    core.driver.runtime.registry["team/app:1"] = "sha256:" + "a" * 64
    seen: list[dict] = []

    async def report(item: dict) -> None:
        seen.append(item)

    result = await core.control.projects.add(ROOT, "p", manifest("team/app:1"), report=report)
    assert core.driver.runtime.pulls == ["team/app:1"]
    assert [i["pull"]["status"] for i in seen] == ["Pulling from registry", "Pull complete"]
    assert all(t["state"] == "completed" for t in await core.settle(result))
    web = await core.control.services.get(ROOT, "p", "web")
    assert web["spec"]["image_id"] == "sha256:" + "a" * 64
    events = [e["type"] for e in await core.control.events.list(ROOT)]
    assert "image.pull" in events


async def test_missing_pulls_only_what_is_absent_and_always_pulls_every_version(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", manifest("busybox")))
    assert core.driver.runtime.pulls == []
    runtime = core.driver.runtime
    runtime.registry["busybox"] = "sha256:" + "b" * 64  # the tag moved in the registry
    made = await core.control.projects.update(ROOT, "p", manifest("busybox", "always"))
    assert runtime.pulls == ["busybox"] and made["changed"]
    assert (await core.control.services.get(ROOT, "p", "web"))["spec"]["image_id"] == "sha256:" + "b" * 64
    await core.control.projects.update(ROOT, "p", manifest("busybox", "always") + "    scale: 2\n")
    assert runtime.pulls == ["busybox", "busybox"]


async def test_never_refuses_a_missing_image_and_changes_nothing(core: Core):
    with pytest.raises(NotFound, match="'nothere:1'.*'pull: never' forbids pulling it"):
        await core.control.projects.add(ROOT, "p", manifest("nothere:1", "never"))
    assert core.driver.runtime.pulls == [] and await core.control.projects.list(ROOT) == []
    await core.settle(await core.control.projects.add(ROOT, "p", manifest("busybox", "never")))
    assert core.driver.runtime.pulls == []


async def test_a_failed_pull_refuses_the_update_with_the_registrys_words_and_changes_nothing(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", manifest("busybox")))
    with pytest.raises(RegistryRefused, match="manifest for nothere:2 not found") as info:
        await core.control.projects.update(ROOT, "p", manifest("nothere:2"))
    assert info.value.status == 502 and info.value.exit_code == 1
    assert [v["seq"] for v in await core.control.projects.versions(ROOT, "p")] == [1]
    # service add and update pull through the same path, and refuse the same way
    with pytest.raises(RegistryRefused):
        await core.control.services.add(ROOT, "p", "worker", "image: nothere:3\n")
    with pytest.raises(RegistryRefused):
        await core.control.services.update(ROOT, "p", "web", "image: nothere:4\n")
    assert [v["seq"] for v in await core.control.projects.versions(ROOT, "p")] == [1]
    assert core.driver.runtime.pulls == ["nothere:2", "nothere:3", "nothere:4"]


async def test_private_registry_pulls_fail_until_login_and_the_password_never_leaves(core: Core):
    runtime = core.driver.runtime
    runtime.registry[PRIVATE] = "sha256:" + "c" * 64
    runtime.registry_users["registry.example:5000"] = ("alice", SECRET)
    with pytest.raises(RegistryRefused, match="unauthorized: authentication required"):
        await core.control.projects.add(ROOT, "p", manifest(PRIVATE))
    with pytest.raises(RegistryRefused, match="401 Unauthorized") as bad:
        await core.control.registry.login(ROOT, "registry.example:5000", "alice", "wrong-password")
    assert "wrong-password" not in bad.value.message
    assert await core.control.registry.list(ROOT) == []
    for host, user, password in (("a b", "alice", SECRET), ("registry.example:5000", "", SECRET),
                                 ("registry.example:5000", "alice", ""), ("registry.example:5000", 5, SECRET)):
        with pytest.raises(BadRequest):
            await core.control.registry.login(ROOT, host, user, password)
    shown = await core.control.registry.login(ROOT, "https://Registry.Example:5000", "alice", SECRET)
    assert shown == {"host": "registry.example:5000", "username": "alice"}
    await core.settle(await core.control.projects.add(ROOT, "p", manifest(PRIVATE)))
    everything = [await core.control.registry.list(ROOT), await core.control.events.list(ROOT),
                  await core.control.projects.get(ROOT, "p"), await core.control.services.get(ROOT, "p", "web")]
    assert SECRET not in repr(everything)
    assert await core.control.registry.logout(ROOT, "registry.example:5000") == {"host": "registry.example:5000"}
    with pytest.raises(NotFound):
        await core.control.registry.logout(ROOT, "registry.example:5000")


def test_progress_lines_of_one_layer_are_thinned_but_status_changes_pass():
    from mariposa.control.pulls import ProgressFilter

    f = ProgressFilter(every=0.5)
    lines = [PullProgress("x", "Downloading", "l1", f"{n}MB/9MB") for n in range(5)]
    assert [f.admit(p, 0.1 * n) for n, p in enumerate(lines)] == [True, False, False, False, False]
    assert f.admit(PullProgress("x", "Downloading", "l1"), 0.6)
    assert f.admit(PullProgress("x", "Download complete", "l1"), 0.61)
    assert f.admit(PullProgress("x", "Downloading", "l2"), 0.62)


async def test_the_watched_directory_pulls_too_and_a_refused_pull_is_the_files_error(core: Core, tmp_path):
    from mariposa.store import files as file_store
    from mariposa.watch import ManifestDirectory

    core.driver.runtime.registry["team/app:1"] = "sha256:" + "d" * 64
    d = tmp_path / "projects"
    d.mkdir()
    (d / "good.yaml").write_text(manifest("team/app:1"))
    (d / "bad.yaml").write_text(manifest("team/nope:1"))
    watcher = ManifestDirectory(core.ctx, core.control, str(d))
    await watcher.scan(settle=0.0)
    assert watcher.applied == 1
    assert (await core.control.services.get(ROOT, "good", "web"))["spec"]["image_id"] == "sha256:" + "d" * 64
    status = await core.ctx.store.call(file_store.file_status, "bad")
    assert status["state"] == "refused" and "manifest for team/nope:1 not found" in status["error"]
    assert [p["name"] for p in await core.control.projects.list(ROOT)] == ["good"]


async def test_pulls_run_side_by_side_and_report_one_line_at_a_time(core: Core):
    """Found by bench_pull.py: three pulls reported at once into one HTTP stream, and trio
    refuses two writers on a stream (an internal error instead of the project)."""
    import trio

    runtime = core.driver.runtime
    for name in ("a:1", "b:1", "c:1"):
        runtime.registry[name] = "sha256:" + name[0] * 64
    core.driver.latency = 0.5
    writing = False
    lines = 0

    async def report(item: dict) -> None:
        nonlocal writing, lines
        assert not writing, "two reports at once"
        writing = True
        await trio.sleep(0.1)  # a slow client: the write blocks
        writing = False
        lines += 1

    text = "services:\n" + "".join(f"  {n[0]}:\n    image: {n}\n" for n in ("a:1", "b:1", "c:1"))
    t0 = trio.current_time()
    await core.control.projects.add(ROOT, "p", text, report=report)
    assert lines == 6 and sorted(runtime.pulls) == ["a:1", "b:1", "c:1"]
    assert trio.current_time() - t0 < 3 * 0.5 + 6 * 0.1  # the pulls overlapped
