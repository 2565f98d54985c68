"""The compose importer (mariposa/compose/): every field of a compose file is reported as mapped,
mapped with a change or not mapped; the value spellings (durations, ports, environment,
health checks) convert as compose means them; and the manifests it makes pass today's validator.

`networks`, `depends_on` and `pull` are manifest options other branches of issue 12 add; until
they land, the generated manifests are validated here with those keys taken out (``strip_new``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mariposa.cli.compose import at_compose_positions
from mariposa.cli.main import cli
from mariposa.compose import CHANGED, MAPPED, UNMAPPED, convert
from mariposa.compose.engine import UNKNOWN
from mariposa.compose.fields import SERVICE_FIELDS
from mariposa.compose.interpolate import InterpolationError, interpolate
from mariposa.compose.values import Port, parse_duration
from mariposa.errors import InvalidManifest
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.env_files import read_beside
from mariposa.manifest.parse import load
from tests.composepaths import unreported

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "compose"
FILES = [EXAMPLES / "webapp" / "docker-compose.yml", EXAMPLES / "worker" / "docker-compose.yml",
         EXAMPLES / "edge" / "compose.yaml"]
NEW_KEYS = ("networks", "depends_on", "pull")  # manifest options of the other branches of issue 12


def strip_new(manifest: dict) -> dict:
    services = {name: {k: v for k, v in section.items() if k not in NEW_KEYS}
                for name, section in manifest["services"].items()}
    return {**{k: v for k, v in manifest.items() if k != "networks"}, "services": services}


def validate(manifest: dict, base: Path) -> None:
    """Through today's validator, as the daemon would (bind_roots aside: the host's policy)."""
    from mariposa.compose.convert import dump

    text = dump(strip_new(manifest))
    parse_manifest(text, "generated.yaml", None, False, read_beside(text, base), bind_roots=None,
                   base_dir=str(base))


def report_of(text: str, **kw):
    conversion = convert(text, "c.yml", compose_dir="/srv/app", **kw)
    return conversion, {e.path: e for e in conversion.entries}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.parent.name)
def test_every_field_of_each_example_is_in_the_report_and_the_manifest_validates(path):
    env = {"SHARED_NETWORK": "edge-shared"}
    conversion = convert(path.read_text(), path.name, env=env, compose_dir=str(path.parent))
    reported = [e.path for e in conversion.entries]
    doc = load(path.read_text(), path.name)
    missing = unreported(doc, reported)
    assert missing == []
    assert all(e.note != "not understood by the importer" for e in conversion.entries)
    assert all(e.status in (MAPPED, CHANGED, UNMAPPED) and e.line >= 1 and e.column >= 1 for e in conversion.entries)
    assert all(e.note for e in conversion.entries if e.status != MAPPED)  # what changed, or why not
    validate(conversion.manifest, path.parent)
    text = conversion.report()
    assert text.splitlines()[0] == f"conversion report for {path.name} ({conversion.form}):"
    assert all(p in text for p in reported)


def test_the_report_of_the_webapp_names_what_it_changed_and_dropped():
    path = FILES[0]
    conversion = convert(path.read_text(), path.name, env={"WEB_PORT": "18080"}, compose_dir=str(path.parent))
    by_path = {e.path: e for e in conversion.entries}
    build = by_path["services.web.build"]
    assert build.status == UNMAPPED and "without a builder" in build.note
    assert by_path["services.web.logging"].status == UNMAPPED
    assert by_path["x-logging"].status == CHANGED
    assert by_path["services.cache.deploy.resources.limits.memory"].note == (
        "deploy.resources.limits.memory -> memory: 64M")
    assert by_path["services.web.ports"].note == "${WEB_PORT} filled in at import (environment and .env)"
    web = conversion.manifest["services"]["web"]
    assert web["ports"] == ["18080:80"] and web["volumes"] == ["./site:/www:ro"]
    unset = convert(path.read_text(), path.name, env={}, compose_dir=str(path.parent))
    assert unset.manifest["services"]["web"]["ports"] == ["8080:80"]
    assert {e.path: e for e in unset.entries}["services.web.ports"].note == (
        "${WEB_PORT} filled in at import (environment and .env); "
        "WEB_PORT not set: blank or its default, as compose does")
    assert web["depends_on"] == {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"}}
    assert conversion.manifest["volumes"] == {"db-data": {}, "cache-data": {"labels": {"com.example.backup": "no"}}}
    assert '"no"' in conversion.text  # a YAML 1.1 reader would take a bare no for false
    assert list(conversion.manifest["services"]) == ["web", "db", "cache"]


def test_v2_shapes():
    conversion, report = report_of("""version: '2.4'
services:
  web:
    image: app
    mem_limit: 1g
    memswap_limit: 2g
    depends_on: [db]
    restart: "no"
    networks: [back]
  db:
    image: db
    restart: on-failure:3
    volume_driver: local
networks:
  back:
    external:
      name: shared-back
""")
    web = conversion.manifest["services"]["web"]
    assert web == {"image": "app", "memory": "1g", "depends_on": ["db"], "restart": "no", "networks": ["shared-back"]}
    assert conversion.manifest["networks"] == {"shared-back": {"external": True}}
    assert conversion.manifest["services"]["db"]["restart"] == "on-failure:3"
    assert report["services.web.mem_limit"].status == CHANGED
    assert report["services.web.memswap_limit"].status == UNMAPPED
    assert report["services.db.volume_driver"].status == UNMAPPED
    assert report["networks.back"].note == "joins the existing network shared-back (back -> shared-back)"
    assert conversion.form == "compose format 2.4"


def test_v3_deploy_shapes():
    conversion, report = report_of("""version: "3.9"
services:
  api:
    image: api
    deploy:
      mode: replicated
      replicas: 4
      endpoint_mode: vip
      labels: {traefik.enable: "true"}
      placement:
        constraints: [node.role == manager]
      resources:
        limits: {cpus: '1', memory: 256M, pids: 100}
        reservations: {memory: 128M}
      restart_policy:
        condition: on-failure
        max_attempts: 5
        delay: 5s
      update_config:
        parallelism: 2
        monitor: 1m
        order: start-first
      rollback_config: {parallelism: 1}
  agent:
    image: agent
    deploy: {mode: global}
""")
    api = conversion.manifest["services"]["api"]
    assert api == {"image": "api", "scale": 4, "memory": "256M", "restart": "on-failure:5", "min_healthy_time": 60}
    assert conversion.manifest["services"]["agent"] == {"image": "agent", "scale": 1}
    assert report["services.api.deploy.replicas"].note == "deploy.replicas -> scale: 4"
    assert report["services.api.deploy.placement"].status == UNMAPPED
    assert "one host" in report["services.api.deploy.placement"].note
    for path in ("deploy.endpoint_mode", "deploy.labels", "deploy.resources.limits.cpus",
                 "deploy.resources.limits.pids", "deploy.resources.reservations", "deploy.restart_policy.delay",
                 "deploy.update_config.parallelism", "deploy.rollback_config"):
        assert report[f"services.api.{path}"].status == UNMAPPED, path
    assert report["services.api.deploy.restart_policy.condition"].status == CHANGED
    assert report["services.api.deploy.update_config.order"].status == MAPPED
    assert report["services.agent.deploy.mode"].status == CHANGED
    assert conversion.form == "compose format 3.9"
    validate(conversion.manifest, Path("/"))


def test_compose_specification_without_version_and_the_formats_refused():
    conversion, report = report_of("name: shop\nservices:\n  web:\n    image: x\n")
    assert conversion.form == "compose specification, no version" and report["name"].status == CHANGED
    with pytest.raises(ManifestError) as info:
        convert("web:\n  image: x\n", "old.yml")
    assert "compose format 1" in str(info.value)
    with pytest.raises(ManifestError) as info:
        convert("version: '4'\nservices:\n  web:\n    image: x\n", "c.yml")
    assert str(info.value).startswith("c.yml:1:10: version: compose format '4'")


@pytest.mark.parametrize("text, seconds", [
    ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5), ("1h2m3s", 3723), (10, 10), ("10", 10),
    ("250us", 0.00025), (0, 0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1x", "", "m", "1m 30s", "-1s", True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_in_the_manifest_and_a_bad_one_at_its_position():
    conversion, report = report_of("services:\n  w:\n    image: x\n    stop_grace_period: 1.5s\n")
    assert conversion.manifest["services"]["w"]["stop"] == {"timeout": 2}
    assert report["services.w.stop_grace_period"].note == "1.5s -> stop: {timeout: 2} (rounded up to whole seconds)"
    with pytest.raises(ManifestError) as info:
        convert("services:\n  w:\n    image: x\n    healthcheck:\n      test: [CMD, x]\n      interval: 1fortnight\n",
                "c.yml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.field) == (6, 17, "services.w.healthcheck.interval")
    assert "invalid duration '1fortnight'" in problem.message


@pytest.mark.parametrize("given, ports, status", [
    (["80"], [80], MAPPED),
    ([80, "53/udp"], [80, "53/udp"], MAPPED),
    (["8080:80"], ["8080:80"], MAPPED),
    (["0.0.0.0:8080:80"], ["8080:80"], CHANGED),
    (["3000-3002"], [3000, 3001, 3002], CHANGED),
    (["9090-9091:8080-8081"], ["9090:8080", "9091:8081"], CHANGED),
    (["8000-8010:80"], [80], CHANGED),
    (["5353:53/udp"], ["5353:53/udp"], MAPPED),
    ([{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}], ["8080:80"], CHANGED),
    ([{"target": 80}], [80], CHANGED),
    (["127.0.0.1:5432:5432", "80"], [80], UNMAPPED),
    (["[::1]:80:80"], [], UNMAPPED),
    (["80/sctp"], [], UNMAPPED),
    ([{"target": 80, "name": "web", "app_protocol": "http"}], [80], UNMAPPED),
])
def test_ports(given, ports, status):
    import json

    conversion, report = report_of(f"services:\n  w:\n    image: x\n    ports: {json.dumps(given)}\n")
    assert conversion.manifest["services"]["w"]["ports"] == ports
    assert report["services.w.ports"].status == status
    validate(conversion.manifest, Path("/"))


def test_a_loopback_port_says_why_it_is_left_out():
    _, report = report_of("services:\n  db:\n    image: x\n    ports: ['127.0.0.1:5432:5432']\n")
    assert "wider than 127.0.0.1; left out" in report["services.db.ports"].note


def test_bad_ports_are_problems_at_their_item():
    with pytest.raises(ManifestError) as info:
        convert("services:\n  w:\n    image: x\n    ports:\n      - 80\n      - 'eighty'\n      - '70000'\n", "c.yml")
    assert [(p.line, p.column, p.field) for p in info.value.problems] == [
        (6, 9, "services.w.ports[1]"), (7, 9, "services.w.ports[2]")]
    assert Port.parse("1-3:1-3").pairs() == [(1, 1), (2, 2), (3, 3)]
    with pytest.raises(ValueError, match="differ in number"):
        Port.parse("1-3:1-2").pairs()


def test_environment_as_a_list_and_as_a_mapping():
    env = {"FROM_SHELL": "shell value"}
    conversion, report = report_of("""services:
  a:
    image: x
    environment: [A=1, "B=two words", FROM_SHELL, NOT_SET, "C="]
  b:
    image: x
    environment:
      A: 1
      DEBUG: true
      FROM_SHELL:
      EMPTY: ""
""", env=env)
    a, b = conversion.manifest["services"]["a"], conversion.manifest["services"]["b"]
    assert a["environment"] == {"A": "1", "B": "two words", "FROM_SHELL": "shell value", "C": ""}
    assert b["environment"] == {"A": "1", "DEBUG": "true", "FROM_SHELL": "shell value", "EMPTY": ""}
    note = report["services.a.environment"].note
    assert report["services.a.environment"].status == CHANGED and "list of KEY=VALUE -> a mapping" in note
    assert "FROM_SHELL taken from your environment" in note and "NOT_SET not set in your environment" in note
    assert "shell value" not in conversion.report()  # values never in the report
    _, plain_report = report_of("services:\n  a:\n    image: x\n    environment: {A: b}\n")
    assert plain_report["services.a.environment"].status == MAPPED
    validate(conversion.manifest, Path("/"))


@pytest.mark.parametrize("test, command", [
    ('["CMD", "test", "-f", "/ok"]', ["test", "-f", "/ok"]),
    ('["CMD-SHELL", "curl -f localhost || exit 1"]', ["/bin/sh", "-c", "curl -f localhost || exit 1"]),
    ("curl -f localhost", ["/bin/sh", "-c", "curl -f localhost"]),
])
def test_health_check_forms(test, command):
    conversion, report = report_of(f"services:\n  w:\n    image: x\n    healthcheck:\n      test: {test}\n"
                                   "      retries: 2\n      start_interval: 1s\n")
    (check,) = conversion.manifest["services"]["w"]["healthchecks"]
    assert check == {"type": "command", "command": command, "poll": 30, "timeout": 30, "retries": 2}
    assert report["services.w.healthcheck.test"].status == CHANGED
    assert report["services.w.healthcheck.start_interval"].status == UNMAPPED
    validate(conversion.manifest, Path("/"))


@pytest.mark.parametrize("check", ['{test: ["NONE"]}', "{disable: true}", '{disable: true, test: ["CMD", "x"]}'])
def test_a_disabled_health_check_writes_none(check):
    conversion, _ = report_of(f"services:\n  w:\n    image: x\n    healthcheck: {check}\n")
    assert "healthchecks" not in conversion.manifest["services"]["w"]


def test_a_bad_health_check_test_is_a_problem_at_its_position():
    with pytest.raises(ManifestError) as info:
        convert("services:\n  w:\n    image: x\n    healthcheck:\n      test: [CMD-SHELL, a, b]\n", "c.yml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (5, 13) and "CMD-SHELL (then one command line)" in problem.message


def test_bad_yaml_is_an_error_with_file_line_and_column():
    with pytest.raises(ManifestError) as info:
        convert("services:\n  web:\n    image: [x\n", "docker-compose.yml")
    assert str(info.value).startswith("docker-compose.yml:4:1: YAML syntax error")
    with pytest.raises(ManifestError) as info:
        convert("services:\n  web:\n    image: x\n    image: y\n", "docker-compose.yml")
    assert str(info.value).startswith("docker-compose.yml:4:5: services.web.image: duplicate key")


def test_interpolation_as_compose_does_it():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET}-$SET-${UNSET}-$$HOME-$$$SET", env) == "v-v--$HOME-$v"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d d  d"
    assert interpolate("${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${UNSET+alt}", env) == "alt  alt "
    assert interpolate("${UNSET:-${SET}}", env) == "v"
    with pytest.raises(InterpolationError, match="TOKEN is required: give a token"):
        interpolate("${TOKEN:?give a token}", env)
    with pytest.raises(InterpolationError, match="write \\$\\$"):
        interpolate("cost: $5", env)
    with pytest.raises(ManifestError) as info:
        convert("services:\n  w:\n    image: x\n    environment:\n      T: ${TOKEN?}\n", "c.yml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.field) == (5, 10, "services.w.environment.T")
    conversion, report = report_of("services:\n  w:\n    image: app:${TAG}\n", env={"TAG": "s3cret-tag"})
    assert conversion.manifest["services"]["w"]["image"] == "app:s3cret-tag"
    assert report["services.w.image"].status == CHANGED and "${TAG}" in report["services.w.image"].note
    assert "s3cret" not in conversion.report()


def test_unknown_and_unmappable_fields_are_never_dropped_silently():
    conversion, report = report_of("""services:
  web:
    image: x
    imagee: y
    x-note: hello
    container_name: web1
    tty: true
    stdin_open: false
secrets:
  pw: {file: ./pw}
configs:
  conf: {file: ./conf}
include: [other.yml]
x-anchors: {a: 1}
unknown_top: 1
""")
    assert report["services.web.imagee"].status == UNMAPPED and report["services.web.imagee"].note == UNKNOWN
    assert report["services.web.x-note"].status == CHANGED
    assert report["services.web.container_name"].status == UNMAPPED
    assert report["services.web.tty"].status == UNMAPPED
    assert report["services.web.stdin_open"].status == MAPPED  # false: what Mariposa does anyway
    for path in ("secrets", "configs", "include", "unknown_top"):
        assert report[path].status == UNMAPPED, path
    assert report["x-anchors"].status == CHANGED
    assert len(conversion.unmapped) == 7


def test_build_without_an_image_cannot_be_converted():
    with pytest.raises(ManifestError) as info:
        convert("services:\n  web:\n    build: .\n", "c.yml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (2, 3)
    assert "has no image (it has build:, which has no meaning without a builder" in problem.message


def test_service_names_become_dns_labels_and_references_follow():
    conversion, report = report_of("""services:
  My_App:
    image: x
    depends_on: {cache.db: {condition: service_healthy}}
  cache.db:
    image: y
""")
    assert list(conversion.manifest["services"]) == ["my-app", "cache-db"]
    assert conversion.manifest["services"]["my-app"]["depends_on"] == {"cache-db": {"condition": "service_healthy"}}
    assert report["services.My_App"].status == CHANGED and "renamed my-app" in report["services.My_App"].note
    with pytest.raises(ManifestError, match="cannot be named 'a-b' in a manifest: 'a_b' is too"):
        convert("services:\n  a_b: {image: x}\n  a-b: {image: x}\n", "c.yml")


def test_depends_on_conditions():
    conversion, report = report_of("""services:
  web:
    image: x
    depends_on:
      db: {condition: service_healthy, restart: true}
      migrate: {condition: service_completed_successfully}
      cache: {condition: service_started, required: true}
  db: {image: x}
  migrate: {image: x}
  cache: {image: x}
""")
    assert conversion.manifest["services"]["web"]["depends_on"] == {
        "db": {"condition": "service_healthy"}, "migrate": {"condition": "service_started"},
        "cache": {"condition": "service_started"}}
    note = report["services.web.depends_on"].note
    assert report["services.web.depends_on"].status == UNMAPPED
    assert "migrate: service_completed_successfully" in note and "db: restart: True is not applied" in note


def test_pull_policy():
    for given, pulled in (("always", "always"), ("never", "never"), ("missing", "missing"),
                          ("if_not_present", "missing")):
        conversion, report = report_of(f"services:\n  w:\n    image: x\n    pull_policy: {given}\n")
        assert conversion.manifest["services"]["w"]["pull"] == pulled
        assert report["services.w.pull_policy"].status == CHANGED
    conversion, report = report_of("services:\n  w:\n    image: x\n    pull_policy: build\n")
    assert "pull" not in conversion.manifest["services"]["w"] and report["services.w.pull_policy"].status == UNMAPPED


def test_volumes_short_and_long_and_relative_paths():
    text = """services:
  w:
    image: x
    volumes:
      - data:/data
      - ./conf:/etc/app:ro
      - ~/cache:/cache
      - /srv/site:/www:ro,z
      - /anonymous
      - type: bind
        source: ../shared
        target: /shared
        read_only: true
        bind: {create_host_path: true}
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 64m}
      - type: volume
        source: data
        target: /more
        volume: {nocopy: true}
volumes:
  data:
    driver: local
    labels: [a=b]
"""
    conversion, report = report_of(text, home="/home/me")
    assert conversion.manifest["services"]["w"]["volumes"] == [
        "data:/data", "./conf:/etc/app:ro", "/home/me/cache:/cache", "/srv/site:/www:ro",
        {"type": "bind", "source": "../shared", "target": "/shared", "read_only": True},
        {"type": "tmpfs", "target": "/scratch", "size": "64m"},
        {"type": "volume", "source": "data", "target": "/more"}]
    note = report["services.w.volumes"].note
    assert report["services.w.volumes"].status == UNMAPPED
    assert "'/anonymous': an anonymous volume" in note and "mode z" in note and "volume {'nocopy': True}" in note
    assert "~ -> /home/me" in note and "create_host_path" in note
    assert report["volumes.data.driver"].status == MAPPED
    absolute, report = report_of(text, home="/home/me", absolute_paths=True)
    assert absolute.manifest["services"]["w"]["volumes"][1] == "/srv/app/conf:/etc/app:ro"
    assert absolute.manifest["services"]["w"]["volumes"][4]["source"] == "/srv/shared"
    assert "./conf -> /srv/app/conf (relative to the compose file)" in report["services.w.volumes"].note


def test_the_table_knows_every_service_option_of_the_compose_specification():
    spec = """annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
    container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset
    credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname
    entrypoint env_file environment expose extends external_links extra_hosts gpus group_add healthcheck hostname
    image init ipc isolation label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
    memswap_limit network_mode networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start
    pre_stop privileged profiles pull_policy read_only restart runtime scale secrets security_opt shm_size
    stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user
    userns_mode uts volumes volumes_from working_dir provider volume_driver""".split()
    assert sorted(set(spec) - set(SERVICE_FIELDS)) == []


def test_generated_manifest_problems_point_at_the_compose_file():
    conversion = convert("services:\n  web:\n    image: x\n    ports: ['8080:80']\n    deploy: {replicas: 3}\n",
                         "docker-compose.yml")
    assert conversion.origin("services.web.ports[0]") == (4, 13)
    assert conversion.origin("services.web.scale") == (5, 24)
    assert conversion.origin("services.web") == (2, 3)
    with pytest.raises(ManifestError) as info:
        parse_manifest(conversion.text, "generated.yaml")
    error = InvalidManifest("refused", details=[p.to_json() for p in info.value.problems])
    (detail,) = at_compose_positions(error, conversion).details
    assert (detail["file"], detail["line"], detail["column"]) == ("docker-compose.yml", 4, 13)
    assert detail["message"].endswith("(generated manifest 5:13)") and "host port 8080" in detail["message"]


def test_cli_strict_refuses_and_adds_nothing(tmp_path):
    shutil.copytree(EXAMPLES / "webapp", tmp_path / "webapp")
    out = tmp_path / "webapp.yaml"
    result = CliRunner().invoke(cli, ["--socket", str(tmp_path / "none.sock"), "project", "import-compose", "app",
                                      str(tmp_path / "webapp" / "docker-compose.yml"), "--strict", "--out", str(out)])
    assert isinstance(result.exception, InvalidManifest)
    assert "4 fields not mapped (--strict); nothing was added" in result.exception.message
    assert {d["field"] for d in result.exception.details} == {
        "services.web.build", "services.web.logging", "services.db.logging",
        "services.cache.deploy.resources.limits.cpus"}
    assert not out.exists()


def test_cli_dry_run_prints_the_manifest_and_the_report(tmp_path):
    shutil.copytree(EXAMPLES / "worker", tmp_path / "worker")
    out = tmp_path / "elsewhere" / "worker.yaml"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, [
        "--socket", str(tmp_path / "none.sock"), "project", "import-compose", "wk",
        str(tmp_path / "worker" / "docker-compose.yml"), "--dry-run", "--out", str(out), "--strict"])
    assert isinstance(result.exception, InvalidManifest)  # --strict: cpu_shares and logging are not mapped
    result = CliRunner().invoke(cli, [
        "--socket", str(tmp_path / "none.sock"), "project", "import-compose", "wk",
        str(tmp_path / "worker" / "docker-compose.yml"), "--dry-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == out.read_text() and result.stdout.startswith("# Converted from")
    assert f"- {tmp_path}/worker/worker.env" in result.stdout  # written elsewhere: the path made absolute
    assert "services.worker.cpu_shares" in result.stderr and "2 not mapped" in result.stderr


def test_restart_policy_conditions():
    for policy, restart in (("{condition: any, max_attempts: 3}", "always"), ("{condition: none}", "no"),
                            ("{condition: on-failure}", "on-failure"), ("{max_attempts: 2}", "always"),
                            ("{condition: on-failure, max_attempts: 2}", "on-failure:2")):
        conversion, report = report_of(f"services:\n  w:\n    image: x\n    deploy:\n      restart_policy: {policy}\n")
        assert conversion.manifest["services"]["w"]["restart"] == restart, policy
        if "max_attempts" in policy:
            status = CHANGED if restart.startswith("on-failure") else UNMAPPED
            assert report["services.w.deploy.restart_policy.max_attempts"].status == status, policy
    with pytest.raises(ManifestError, match="unknown restart_policy condition 'sometimes'"):
        convert("services:\n  w:\n    image: x\n    deploy: {restart_policy: {condition: sometimes}}\n", "c.yml")


def test_env_file_entries():
    conversion, report = report_of(
        "services:\n  w:\n    image: x\n    env_file: [a.env, {path: b.env, required: false}]\n")
    assert conversion.manifest["services"]["w"]["env_file"] == ["a.env", {"path": "b.env", "required": False}]
    assert report["services.w.env_file"].status == MAPPED
    conversion, report = report_of("services:\n  w:\n    image: x\n    env_file: {path: a.env, format: raw}\n",
                                   absolute_paths=True)
    assert conversion.manifest["services"]["w"]["env_file"] == [{"path": "/srv/app/a.env"}]
    entry = report["services.w.env_file"]
    assert entry.status == UNMAPPED and "format of 'a.env'" in entry.note


def test_a_volume_with_more_parts_than_compose_reads_is_a_problem():
    with pytest.raises(ManifestError) as info:
        convert("services:\n  w:\n    image: x\n    volumes: ['a:/b:ro:extra']\n", "c.yml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.field) == (4, 15, "services.w.volumes[0]")


def test_braces_in_compose_values_stay_literal_in_the_manifest():
    """Compose has no {{ templates: a '{{' it holds is the manifest's literal '{{{{'."""
    from mariposa.compose.convert import dump
    from mariposa.converge.render import render_spec

    conversion, _ = report_of("services:\n  web:\n    image: busybox\n    environment:\n      A: 'x{{ y }}'\n"
                              "    command: echo '{{'\n    labels:\n      l: '{{.z}}'\n")
    spec = parse_manifest(dump(conversion.manifest), "generated.yaml", meta={}).services[0]
    rendered = render_spec(spec, {}, {})
    assert dict(rendered.environment)["A"] == "x{{ y }}" and rendered.command == ("echo", "{{")
    assert dict(rendered.tags)["l"] == "{{.z}}"


def test_links_that_are_not_a_list_are_refused_at_their_position():
    """Found by the compose property test: ``links: true`` raised a TypeError."""
    with pytest.raises(ManifestError) as info:
        convert("services:\n  web:\n    image: x\n    links: true\n", "c.yml")
    assert str(info.value).startswith("c.yml:4:12: ") and "links must be a list" in str(info.value), str(info.value)
