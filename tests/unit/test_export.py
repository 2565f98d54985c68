"""mariposa/export/: each target's mapping, and the report's promise: every field written has an
entry (mapped, changed, or not representable and why), never a silent drop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mariposa.export import CHANGED, MAPPED, NO_RULE, TARGETS, UNMAPPED, export, refusal
from mariposa.export.fields import manifest_fields
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.service import _OPTIONS
from tests.faults.fuzz import OPTION_VALUES
from tests.unit.nomad_schema import check_job

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "export_data"
EVERY = (DATA / "every_option.yaml").read_text()


def parsed(text: str):
    return parse_manifest(text, allow_privileged=True, env_files={"web.env": "FROM_FILE=1\n"}, bind_roots=None,
                          cluster=None)  # not checked: the export is for any daemon


def run(target: str, text: str, project: str = "demo", **kw):
    return export(target, parsed(text), text, project, "demo.yaml", **kw)


def entry(result, path: str):
    [found] = [e for e in result.entries if e.path == path]
    return found


def test_the_every_option_manifest_uses_every_option():
    """So the no-silent-drop test below covers every option the parser knows (but containerpilot,
    which the parser refuses whatever its value)."""
    fields = manifest_fields(EVERY, "x")
    used = {p.split(".")[2] for p in fields if p.startswith("services.") and p.count(".") == 2}
    assert set(OPTION_VALUES) == set(_OPTIONS)
    assert used == set(_OPTIONS) - {"containerpilot"}


@pytest.mark.parametrize("target", TARGETS)
def test_every_field_of_every_option_has_an_entry(target):
    result = run(target, EVERY)
    fields = manifest_fields(EVERY, "demo.yaml")
    assert [e.path for e in result.entries] == list(fields)  # one each, in file order
    assert not [e for e in result.entries if e.note == NO_RULE]
    for e in result.entries:
        assert (e.line, e.column) == fields[e.path]
        assert e.status in (MAPPED, CHANGED, UNMAPPED)
        if e.status != MAPPED:
            assert e.note, e  # a change or a refusal always says what or why


@pytest.mark.parametrize("target", TARGETS)
def test_the_example_project_report_lists_every_field(target):
    text = (ROOT / "examples/jupiter.yaml").read_text()
    result = export(target, parse_manifest(text), text, "jupiter", "jupiter.yaml")
    assert [e.path for e in result.entries] == list(manifest_fields(text, "jupiter.yaml"))
    assert not [e for e in result.entries if e.note == NO_RULE]
    report = result.report("jupiter.yaml")
    assert report.startswith(f"conversion report for jupiter.yaml ({target}):")
    assert "   7:5  services.web.scale" in report


def test_a_field_without_a_rule_is_reported_not_dropped(monkeypatch):
    from mariposa.export import common

    monkeypatch.delitem(common._TABLE, "working_dir")
    result = run("compose", "services:\n  a:\n    image: x\n    working_dir: /srv\n")
    assert entry(result, "services.a.working_dir").note == NO_RULE
    assert entry(result, "services.a.working_dir").status == UNMAPPED


# ---- hard anti-affinity -------------------------------------------------------------------------

ANTI = """services:
  web:
    image: mariposa-example/busybox:latest
    scale: 3
    affinity:
      - container!=web*
  db:
    image: mariposa-example/busybox:latest
    tags: {role: database}
    affinity:
      - service!=web
      - node.labels.disk==ssd
      - node.labels.zone==~a
"""


def test_the_parser_refuses_hard_anti_affinity_on_one_host_and_admits_it_on_a_swarm():
    with pytest.raises(ManifestError, match="cannot be honoured on a single host"):
        parse_manifest(ANTI)
    assert parse_manifest(ANTI, cluster="swarm").service("web").affinity == ("container!=web*",)


def test_stack_hard_anti_affinity_inside_one_service_is_one_per_node():
    result = run("swarm-stack", ANTI)
    stack = yaml.safe_load(result.files["stack.yaml"])
    assert stack["services"]["web"]["deploy"]["placement"] == {"max_replicas_per_node": 1}
    e = entry(result, "services.web.affinity")
    assert e.status == CHANGED
    assert "max_replicas_per_node: 1" in e.note and "container!=web*" in e.note
    assert "max_replicas_per_node: 1" in result.report("demo.yaml")


def test_stack_rules_between_services_are_not_representable_and_node_rules_are_placement():
    result = run("swarm-stack", ANTI)
    db = yaml.safe_load(result.files["stack.yaml"])["services"]["db"]["deploy"]["placement"]
    assert db == {"constraints": ["node.labels.disk==ssd"], "preferences": [{"spread": "node.labels.zone"}]}
    e = entry(result, "services.db.affinity")
    assert e.status == UNMAPPED and "service!=web: a rule between services' instances is not representable" in e.note


def test_kubernetes_expresses_rules_between_services_as_pod_anti_affinity():
    result = run("kubernetes", ANTI)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.files["demo.k8s.yaml"])}
    web = docs[("Deployment", "web")]["spec"]
    anti = web["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti == [{"labelSelector": {"matchLabels": {"mariposa/service": "web"}},
                     "topologyKey": "kubernetes.io/hostname"}]
    assert web["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}  # k8s#116891
    db = docs[("Deployment", "db")]["spec"]["template"]["spec"]["affinity"]
    assert db["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}
    assert entry(result, "services.db.affinity").status == MAPPED
    assert entry(result, "services.web.affinity").status == MAPPED


def test_nomad_one_per_node_is_distinct_hosts():
    result = run("nomad", ANTI)
    job = json.loads(result.files["demo.json"])["Job"]
    web = next(g for g in job["TaskGroups"] if g["Name"] == "web")
    assert {"Operand": "distinct_hosts", "RTarget": "true"} in web["Constraints"]
    db = next(g for g in job["TaskGroups"] if g["Name"] == "db")
    assert {"LTarget": "${meta.disk}", "RTarget": "ssd", "Operand": "="} in db["Constraints"]
    assert db["Affinities"][0]["Weight"] == 50
    assert entry(result, "services.db.affinity").status == UNMAPPED


def test_compose_has_no_placement():
    e = entry(run("compose", ANTI), "services.web.affinity")
    assert e.status == UNMAPPED and "one host" in e.note


# ---- scheduled and event services -----------------------------------------------------------------

SCHEDULED = """services:
  report:
    service_type: scheduled
    image: mariposa-example/busybox:latest
    command: echo report
    schedule: "*/5 * * * *"
    time_zone: Europe/Paris
    concurrency: {concurrency}
    history: {{succeeded: 3, failed: 1}}
  hook:
    service_type: event
    image: mariposa-example/busybox:latest
    command: echo hook
"""


@pytest.mark.parametrize(("concurrency", "policy", "status"), [
    ("allow", "Allow", MAPPED), ("forbid", "Forbid", MAPPED), ("replace", "Replace", MAPPED),
    ("queue", "Forbid", CHANGED)])
def test_kubernetes_cronjob_concurrency(concurrency, policy, status):
    result = run("kubernetes", SCHEDULED.format(concurrency=concurrency))
    docs = {d["kind"]: d for d in yaml.safe_load_all(result.files["demo.k8s.yaml"])}
    cron = docs["CronJob"]["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == ("*/5 * * * *", "Europe/Paris", policy)
    assert (cron["successfulJobsHistoryLimit"], cron["failedJobsHistoryLimit"]) == (3, 1)
    assert entry(result, "services.report.concurrency").status == status
    assert docs["Job"]["spec"]["suspend"] is True
    assert entry(result, "services.hook.service_type").status == CHANGED


@pytest.mark.parametrize(("concurrency", "overlap"), [("allow", False), ("forbid", True), ("queue", True)])
def test_nomad_periodic_and_parameterized_jobs(concurrency, overlap):
    result = run("nomad", SCHEDULED.format(concurrency=concurrency))
    assert sorted(result.files) == ["demo-hook.json", "demo-report.json"]
    for text in result.files.values():
        check_job(json.loads(text))
    periodic = json.loads(result.files["demo-report.json"])["Job"]["Periodic"]
    assert periodic == {"Enabled": True, "SpecType": "cron", "Spec": "*/5 * * * *", "ProhibitOverlap": overlap,
                        "TimeZone": "Europe/Paris"}
    hook = json.loads(result.files["demo-hook.json"])["Job"]
    assert hook["Type"] == "batch" and "ParameterizedJob" in hook


@pytest.mark.parametrize("target", ["compose", "swarm-stack"])
def test_compose_and_stack_report_schedules_as_not_representable(target):
    result = run(target, SCHEDULED.format(concurrency="forbid"))
    for option in ("service_type", "schedule", "time_zone", "concurrency"):
        assert entry(result, f"services.report.{option}").status == UNMAPPED
    assert entry(result, "services.hook.service_type").status == UNMAPPED


# ---- secrets ------------------------------------------------------------------------------------

SECRET = """services:
  app:
    image: mariposa-example/busybox:latest
    secret_env: true
    environment:
      PASSWORD: "{{ .secret.db_password }}"
    secrets: [api_key]
"""


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_are_references_unless_values_are_given(target):
    plain = run(target, SECRET)
    text = "".join(plain.files.values())
    assert "s3cret-value" not in text and "k3y-value" not in text
    shown = run(target, SECRET, secret_values={"db_password": "s3cret-value", "api_key": "k3y-value"})
    assert "k3y-value" in "".join(shown.files.values())


def test_kubernetes_secrets_are_objects_without_data_and_secret_key_refs():
    docs = list(yaml.safe_load_all(run("kubernetes", SECRET).files["demo.k8s.yaml"]))
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert {d["metadata"]["name"] for d in secrets} == {"secret-db-password", "secret-api-key"}
    assert all("data" not in d and "stringData" not in d for d in secrets)
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "secret-db-password", "key": "value"}}}]


def test_compose_secrets_are_external():
    doc = yaml.safe_load(run("compose", SECRET).files["compose.yaml"])
    assert doc["secrets"]["api_key"] == {"external": True, "name": "demo_api_key"}
    assert doc["services"]["app"]["environment"]["PASSWORD"] == "${PASSWORD}"


# ---- strict and the rest ------------------------------------------------------------------------


def test_refusal_lists_every_unrepresentable_field():
    result = run("compose", ANTI)
    text = refusal(result, "demo.yaml")
    assert "export to compose refused (--strict): 2 field(s) not representable" in text
    assert "6:7" not in text and "services.web.affinity" in text and "services.db.affinity" in text


def test_compose_escapes_dollars():
    text = "services:\n  a:\n    image: x\n    command: sh -c 'echo $HOME $(hostname)'\n"
    doc = yaml.safe_load(run("compose", text).files["compose.yaml"])
    assert doc["services"]["a"]["command"] == ["sh", "-c", "echo $$HOME $$(hostname)"]


def test_an_unknown_target_is_a_clear_error():
    from mariposa.errors import BadRequest

    with pytest.raises(BadRequest, match="'to' must be one of compose, swarm-stack, nomad, kubernetes"):
        run("helm", ANTI)


def test_nomad_job_of_the_example_passes_the_api_structure():
    text = (ROOT / "examples/jupiter.yaml").read_text()
    result = export("nomad", parse_manifest(text), text, "jupiter")
    job = json.loads(result.files["jupiter.json"])
    check_job(job)
    assert [g["Count"] for g in job["Job"]["TaskGroups"]] == [2, 1]


def test_nomad_checker_catches_a_wrong_job():
    with pytest.raises(AssertionError, match="TaskGroups"):
        check_job({"Job": {"ID": "x", "Name": "x", "Type": "service", "Datacenters": ["dc1"]}})
    with pytest.raises(AssertionError, match="Count"):
        check_job({"Job": {"ID": "x", "Name": "x", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
            {"Name": "g", "Count": "2", "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": "i"}}]}]}})


@pytest.mark.parametrize("target", TARGETS)
def test_meta_templates_in_command_are_reported_as_written(target):
    text = "services:\n  a:\n    image: x\n    command: [echo, '{{ .meta.greeting }}']\n"
    e = entry(run(target, text), "services.a.command")
    assert e.status == CHANGED and "templates are exported as written" in e.note
