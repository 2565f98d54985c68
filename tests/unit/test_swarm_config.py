"""cluster = "none" | "swarm" in the daemon's configuration, the manifest's endpoint_mode, and
doctor's Swarm section (pure: it is handed what the Engine answered)."""

from __future__ import annotations

import pytest

from mariposa.config import ConfigError, load
from mariposa.doctor import swarm_checks
from tests.unit.test_manifest import service, service_problem


def _write(tmp_path, text):
    path = tmp_path / "mariposa.toml"
    path.write_text(text)
    return str(path)


def test_cluster_defaults_to_none_and_takes_swarm(tmp_path):
    assert load(_write(tmp_path, "")).cluster == "none"
    assert load(_write(tmp_path, 'cluster = "swarm"\n')).cluster == "swarm"
    assert load(_write(tmp_path, ""), {"cluster": "swarm"}).cluster == "swarm"  # the daemon's --cluster flag


@pytest.mark.parametrize(("text", "expected"), [
    ('\ncluster = "kubernetes"\n', ":2: cluster: expected one of none, swarm, got 'kubernetes'"),
    ("cluster = true\n", ":1: cluster: expected str, got bool"),
])
def test_a_bad_cluster_is_refused_naming_the_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.message == path + expected


def test_the_daemon_flag_offers_the_two_clusters():
    from mariposa.cli.main import daemon

    option = next(p for p in daemon.params if p.name == "cluster")
    assert list(option.type.choices) == ["none", "swarm"]


def test_endpoint_mode_defaults_to_vip_and_changes_no_instance():
    assert service("image: x").endpoint_mode == "vip"
    dnsrr = service("image: x\nendpoint_mode: dnsrr")
    assert dnsrr.endpoint_mode == "dnsrr"
    assert dnsrr.spec_hash == service("image: x").spec_hash  # no effect on the local engine


def test_a_bad_endpoint_mode_is_refused_where_it_is_written():
    found = service_problem("image: x\nendpoint_mode: dns")
    assert (found.line, found.column) == (4, 20)
    assert found.message == "unknown endpoint_mode 'dns'; did you mean 'dnsrr'? (expected one of vip, dnsrr)"


NODE = {
    "ID": "4ca3rex584l3qckpszzj72vg3",
    "Spec": {"Role": "manager", "Availability": "active", "Labels": {"zone": "a"}},
    "Description": {"Hostname": "vm", "Engine": {"EngineVersion": "20.10.24"}},
    "Status": {"State": "ready"},
    "ManagerStatus": {"Leader": True, "Reachability": "reachable"},
}
MANAGER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "Nodes": 2, "Managers": 1,
                     "Cluster": {"ID": "a6a2gq2e3ochi4lxhziwuorid"}}}


def test_doctor_lists_the_nodes_of_the_swarm():
    worker = {"ID": "w1", "Spec": {"Role": "worker", "Availability": "drain"},
              "Description": {"Hostname": "w", "Engine": {"EngineVersion": "24.0"}}, "Status": {"State": "down"}}
    checks = swarm_checks(MANAGER, [worker, NODE], "swarm")
    assert checks[0] == {"check": "swarm", "status": "ok", "fix": "",
                         "detail": 'manager of swarm a6a2gq2e3och: 2 nodes, 1 managers; cluster = "swarm"'}
    assert checks[1]["detail"] == "vm 4ca3rex584l3: manager (leader), active, ready, engine 20.10.24, zone=a"
    assert checks[2]["status"] == "warn"
    assert checks[2]["detail"] == "w w1: worker, drain, down, engine 24.0, no labels"


def test_doctor_fails_a_swarm_cluster_on_an_engine_that_is_no_manager():
    alone = {"Swarm": {"LocalNodeState": "inactive"}}
    [check] = swarm_checks(alone, None, "swarm")
    assert check["status"] == "fail" and "not in a swarm" in check["detail"]
    assert check["fix"].startswith("docker swarm init --advertise-addr")
    assert swarm_checks(alone, None, "none")[0]["status"] == "ok"  # one host needs no swarm
    worker = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False,
                        "RemoteManagers": [{"Addr": "10.0.0.1:2377"}]}}
    [check] = swarm_checks(worker, None, "swarm")
    assert check["status"] == "fail" and "10.0.0.1:2377" in check["detail"]
    [check] = swarm_checks(None, None, "swarm", "no answer at /var/run/docker.sock: ConnectError")
    assert check["status"] == "fail"


def test_the_daemon_takes_only_a_manager_of_an_active_swarm():
    from mariposa.swarm.client import judge

    assert judge({"Swarm": {"LocalNodeState": "inactive"}}, "unix:///d.sock") == (
        False, "the engine at unix:///d.sock is not in a swarm (LocalNodeState 'inactive')")
    assert judge({"Swarm": {"LocalNodeState": "pending"}}, "e")[0] is False
    assert judge({"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}, "e") == (
        False, "the engine at e is a swarm worker, not a manager")
    assert judge(MANAGER, "e") == (True, "the engine at e manages swarm a6a2gq2e3och (2 nodes, 1 managers)")
