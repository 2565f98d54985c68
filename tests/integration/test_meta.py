"""Project meta and interpolation against the real Docker Engine: atomic increments from 100 CLI
processes, CAS refusals, import warnings, a meta change rolled out without dropping below scale,
on_meta_change: none, an undefined key refused with its position, and project copy."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, sampling, wait_until

pytestmark = pytest.mark.docker

PLAIN = f"""services:
  app:
    image: {IMAGE}
    command: sleep 100000
"""

GREETER = f"""services:
  web:
    image: {IMAGE}
    scale: 3
    min_healthy_time: 1
    environment:
      GREETING: "{{{{ .meta.greeting }}}}"
    command: sh -c 'echo $GREETING > /www/index.html && exec httpd -f -p 80 -h /www'
    healthchecks:
      - type: http
        port: 80
        path: /{{{{ .meta.page }}}}
        poll: 0.3
        retries: 2
        timeout: 2
  quiet:
    image: {IMAGE}
    on_meta_change: none
    environment:
      GREETING: "{{{{ .meta.greeting }}}}"
    command: sleep 100000
"""


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_parallel_increments_cas_and_import(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "m", write(tmp_path, "m.yaml", PLAIN))
    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda _: daemon.cli("-j", "m", "meta", "incr", "counter"), range(100)))
    assert all(r.returncode == 0 for r in results)
    assert daemon.cli("-j", "m", "meta", "get", "counter").stdout == "100\n"
    assert daemon.cli("-j", "m", "meta", "decr", "counter", "40").stdout.strip() == "60"
    events = [e for e in daemon.json("-j", "m", "events") if e["type"] == "meta.increment"]
    assert len(events) == 100 and all(e["author"].startswith("uid=") for e in events)

    daemon.cli("-j", "m", "meta", "set", "word", "-", input="from stdin")
    assert daemon.cli("-j", "m", "meta", "get", "word").stdout == "from stdin\n"
    refused = daemon.cli("-j", "m", "meta", "incr", "word", check=False)
    assert refused.returncode == 1 and "not an integer" in refused.stderr
    listed = {r["key"]: r for r in daemon.json("-j", "m", "meta", "list")}
    assert set(listed) == {"counter", "word"} and set(listed["word"]) == {"key", "value", "cas"}
    cas = listed["word"]["cas"]
    stale = daemon.cli("-j", "m", "meta", "set", "word", "x", "0123456789abcdef", check=False)
    assert stale.returncode == 5 and cas in stale.stderr
    stale = daemon.cli("-j", "m", "meta", "rm", "word", "--cas", "0123456789abcdef", check=False)
    assert stale.returncode == 5 and cas in stale.stderr
    daemon.cli("-j", "m", "meta", "update", "word", "y", "--cas", cas)
    assert daemon.cli("-j", "m", "meta", "get", "word").stdout == "y\n"

    imported = daemon.cli("-j", "m", "meta", "import", write(tmp_path, "meta.yaml", "word: z\ncounter: 0\nnew: 1\n"))
    warnings = [line for line in imported.stderr.splitlines() if line.startswith("warning:")]
    assert sorted(warnings) == ["warning: meta counter is already set: kept (--force overwrites it)",
                                "warning: meta word is already set: kept (--force overwrites it)"]
    now = {r["key"]: r["value"] for r in daemon.json("-j", "m", "meta", "ls")}
    assert now == {"counter": "60", "word": "y", "new": "1"}
    daemon.cli("-j", "m", "meta", "import", "-f", write(tmp_path, "meta.yaml", "word: z\n"))
    assert daemon.cli("-j", "m", "meta", "get", "word").stdout == "z\n"
    daemon.cli("-j", "m", "meta", "del", "new")
    assert daemon.cli("-j", "m", "meta", "get", "new", check=False).returncode == 4


def serving(daemon: Daemon, project: str, service: str) -> list[dict]:
    instances = daemon.api(f"/v1/projects/{project}/services/{service}/instances")
    return [i for i in instances if i["state"] == "running" and not i["retired"]]


def answer(address: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=LATE) as resp:
            return resp.read().decode().strip()
    except OSError:
        return None


def env_of(container_id: str) -> dict[str, str]:
    inspected = json.loads(docker("inspect", container_id))[0]
    return dict(e.split("=", 1) for e in inspected["Config"]["Env"])


def test_meta_change_rolls_out_never_below_scale_and_none_waits(daemon: Daemon, tmp_path):
    meta = write(tmp_path, "meta.yaml", "greeting: hello\npage: index.html\n")
    daemon.cli("project", "add", "g", write(tmp_path, "g.yaml", GREETER), "--meta", meta, "--wait")
    wait_until(lambda: len(serving(daemon, "g", "web")) == 3, timeout=60, what="3 instances")
    wait_until(lambda: all(i["health"] == "healthy" for i in serving(daemon, "g", "web")), timeout=60,
               what="healthy (the check's path is rendered)")
    assert {answer(i["address"]) for i in serving(daemon, "g", "web")} == {"hello"}
    [quiet] = daemon.running("quiet")
    assert env_of(quiet["ID"])["GREETING"] == "hello"

    with sampling(lambda: len(serving(daemon, "g", "web"))) as counts:
        out = daemon.cli("-j", "g", "meta", "set", "greeting", "hi", "--wait")
    assert "reprovision" in out.stdout + out.stderr
    assert len(counts) >= 10 and min(counts) >= 3, counts
    final = serving(daemon, "g", "web")
    assert len(final) == 3 and {answer(i["address"]) for i in final} == {"hi"}
    versions = daemon.json("project", "versions", "g")
    assert [v["seq"] for v in versions] == [2, 1] and versions[0]["meta_keys"] == ["greeting"]
    assert {i["version_id"] for i in final} == {versions[0]["id"]}
    stored = daemon.json("project", "version", versions[0]["id"])["manifest"]
    assert "{{ .meta.greeting }}" in stored and "hi" not in stored  # never stored expanded

    # on_meta_change: none: left alone until a reprovision
    time.sleep(2)
    assert [c["ID"] for c in daemon.running("quiet")] == [quiet["ID"]]
    assert env_of(quiet["ID"])["GREETING"] == "hello"
    daemon.cli("-j", "g", "service", "reprovision", "quiet", "--wait")
    [fresh] = daemon.running("quiet")
    assert fresh["ID"] != quiet["ID"] and env_of(fresh["ID"])["GREETING"] == "hi"

    # an undefined key is refused at update with its position; nothing changes
    bad = write(tmp_path, "bad.yaml", GREETER.replace("command: sleep 100000", "command: sleep {{ .meta.nope }}"))
    before = sorted(c["ID"] for c in daemon.running())
    r = daemon.cli("project", "update", "g", bad, check=False)
    assert r.returncode == 1 and f"{bad}:21:14" in r.stderr and "undefined variable .meta.nope" in r.stderr
    assert [v["seq"] for v in daemon.json("project", "versions", "g")] == [2, 1]
    time.sleep(1)
    assert sorted(c["ID"] for c in daemon.running()) == before

    # a key in use cannot be removed; a copy without meta lists what to set and is not made
    r = daemon.cli("-j", "g", "meta", "rm", "greeting", check=False)
    assert r.returncode == 5 and "used by quiet, web" in r.stderr
    r = daemon.cli("project", "copy", "g", "g2", check=False)
    assert r.returncode == 1 and "needs meta greeting, page" in r.stderr
    assert daemon.cli("project", "get", "g2", check=False).returncode == 4
    daemon.cli("project", "copy", "g", "g3", "--with-meta", "--wait")
    assert {r["key"] for r in daemon.json("-j", "g3", "meta", "list")} == {"greeting", "page"}
    wait_until(lambda: len(serving(daemon, "g3", "web")) == 3, timeout=60, what="the copy running")


def test_cli_meta_get_prints_the_value_alone(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "v", write(tmp_path, "v.yaml", PLAIN))
    daemon.cli("-j", "v", "meta", "set", "neg", "-5")
    assert daemon.cli("-j", "v", "meta", "get", "neg").stdout == "-5\n"


def test_a_secret_in_environment_needs_secret_env_and_is_stored_as_its_name(daemon: Daemon, tmp_path):
    canary = "canary-" + uuid.uuid4().hex
    daemon.cli("-j", "se", "secret", "set", "db", input=canary)
    text = (f"services:\n  app:\n    image: {IMAGE}\n    command: sleep 100000\n    secret_env: true\n"
            "    environment:\n      DB: \"{{ .secret.db }}\"\n")
    r = daemon.cli("project", "add", "se", write(tmp_path, "bad.yaml", text.replace("    secret_env: true\n", "")),
                   check=False)
    assert r.returncode == 1 and "bad.yaml:6:11" in r.stderr and "secret_env: true" in r.stderr
    daemon.cli("project", "add", "se", write(tmp_path, "se.yaml", text), "--wait")
    [app] = daemon.running("app")
    assert env_of(app["ID"])["DB"] == canary  # in env by the user's choice (secret_env): docker inspect shows it
    shown = [daemon.cli("project", "get", "se", "--json").stdout, daemon.cli("-j", "se", "events", "--json").stdout,
             daemon.cli("project", "versions", "se", "--json").stdout]
    assert all(canary not in out for out in shown)
    assert "{{ .secret.db }}" in daemon.json("project", "get", "se")["version"]["manifest"]
