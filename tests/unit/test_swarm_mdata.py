"""Live mdata as Swarm configs (swarm/spec.py, swarm/converge.py): a config per file named by its
content's digest, the service's digest label, the planner updating a service whose values changed,
the configs no service names any more, and the Swarm's refusals at version time."""

from __future__ import annotations

import pytest

from mariposa.manifest import parse_manifest
from mariposa.manifest.errors import ManifestError
from mariposa.model import LABEL_SPEC_HASH, ServiceGoal, ServiceSpec
from mariposa.swarm.converge import Observed, UpdateService, WaitFor, observe, plan_swarm
from mariposa.swarm.spec import (
    LABEL_MDATA,
    MDATA_TARGET,
    SWARM_NAME_MAX,
    config_name,
    mdata_digest,
    stale_configs,
    swarm_service,
)

PID = "0123456789abcdef"
SPEC = ServiceSpec(name="web", image="img", mdata=(("color", "{{ .meta.color }}"),))
MAIN = "mariposa-p-web-01234567"


def goal() -> ServiceGoal:
    return ServiceGoal(project_id=PID, project_name="p", version_id="v1", spec=SPEC, scale=2,
                       desired="running", keep_stale=False)  # type: ignore[arg-type]


def test_a_config_is_named_by_its_content():
    a, b = config_name("shop", PID, "color", "red"), config_name("shop", PID, "color", "blue")
    assert a.startswith("mariposa-shop-01234567-mdata-color-") and a != b
    assert config_name("shop", PID, "color", "red") == a  # the same content is the same config


def test_a_long_name_keeps_its_digest_within_the_swarms_limit():
    long = config_name("p" * 60, PID, "k" * 200, "x")
    assert len(long) <= SWARM_NAME_MAX
    assert long.endswith(config_name("p", PID, "k", "x")[-12:])
    assert long[-13] == "-" and long[-14] not in "-_."


def test_the_digest_covers_every_file_and_is_empty_without_mdata():
    assert mdata_digest({}) == ""
    one = mdata_digest({"a": "1", "b": "2"})
    assert one == mdata_digest({"b": "2", "a": "1"})
    assert one != mdata_digest({"a": "1", "b": "3"}) and one != mdata_digest({"a": "1"})


def test_configs_are_mounted_at_the_local_path_and_labelled_with_the_digest():
    out = swarm_service("o", PID, "p", "v1", SPEC, 2, configs={"color": ("cid", "cname")}, mdata="d1")
    assert out.ok
    container = out.body["TaskTemplate"]["ContainerSpec"]
    assert container["Configs"] == [{"ConfigID": "cid", "ConfigName": "cname", "File": {
        "Name": f"{MDATA_TARGET}/color", "UID": "0", "GID": "0", "Mode": 0o444}}]
    assert out.body["Labels"][LABEL_MDATA] == "d1" and container["Labels"][LABEL_MDATA] == "d1"


def test_mdata_signal_is_refused_with_the_reason():
    out = swarm_service("o", PID, "p", "v1", ServiceSpec(name="w", image="i", mdata_signal="SIGHUP"), 1)
    [problem] = out.problems
    assert problem.field == "mdata_signal" and "rolling update" in problem.reason


def test_stale_configs_are_those_no_spec_nor_previous_spec_names():
    def svc(*ids, previous=()):
        def spec(refs):
            return {"TaskTemplate": {"ContainerSpec": {"Configs": [{"ConfigID": i} for i in refs]}}}
        return {"Spec": spec(ids), **({"PreviousSpec": spec(previous)} if previous else {})}

    configs = [{"ID": i} for i in ("new", "old", "gone", "other")]
    assert stale_configs(configs, [svc("new", previous=("old",)), svc("other")]) == ["gone"]
    assert stale_configs(configs, []) == ["new", "old", "gone", "other"]


def test_the_planner_updates_a_service_whose_values_changed_and_only_then():
    h = SPEC.spec_hash
    settled = Observed(MAIN, h, 2, running=2, mdata="d1")
    assert plan_swarm(goal(), [settled], MAIN, mdata="d1") == []
    assert plan_swarm(goal(), [settled], MAIN, mdata="d2") == [UpdateService(MAIN, 2)]
    assert plan_swarm(goal(), [settled], MAIN) == []  # the reconciler's look: mdata not compared
    rolling = Observed(MAIN, h, 2, running=1, update_state="updating", mdata="d2")
    assert [type(s) for s in plan_swarm(goal(), [rolling], MAIN, mdata="d2")] == [WaitFor]


def test_only_tasks_on_the_services_values_count_as_running():
    service = {"ID": "s1", "Spec": {"Name": MAIN, "Labels": {
        "io.mariposa.project": PID, "io.mariposa.service": "web", LABEL_SPEC_HASH: "h", LABEL_MDATA: "d2"},
        "Mode": {"Replicated": {"Replicas": 2}}}}

    def task(digest):
        return {"ServiceID": "s1", "DesiredState": "running", "Status": {"State": "running"},
                "Spec": {"ContainerSpec": {"Labels": {LABEL_SPEC_HASH: "h", LABEL_MDATA: digest}}}}

    [o] = observe([service], [task("d1"), task("d2")], PID, "web")
    assert o.mdata == "d2" and o.running == 1


SWARM_MANIFEST = """services:
  web:
    image: img
    mdata:
      color: "{{ .meta.color }}"
      me: "{{ .placement.instance.name }}"
    mdata_signal: SIGHUP
"""


def test_the_manifest_refuses_what_the_swarm_cannot_honour_by_name():
    with pytest.raises(ManifestError) as caught:
        parse_manifest(SWARM_MANIFEST, cluster="swarm")
    text = str(caught.value)
    assert "mdata_signal cannot be honoured on the Swarm" in text
    assert "mdata key 'me' names an instance's variable" in text
    assert "'color'" not in text
    parse_manifest(SWARM_MANIFEST, cluster="none")  # the local driver honours both
