"""A ServiceSpec as a Swarm service spec (mariposa/swarm/spec.py): each field where the Engine
reads it, or refused with the reason; none dropped silently."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.model import LABEL_OWNER, LABEL_SERVICE, LABEL_VERSION, MountSpec, PortSpec, ServiceSpec
from mariposa.swarm.placement import Placement, Problem
from mariposa.swarm.spec import CHECKED, MAPPED, MARIPOSA, NS, overlay_name, swarm_service

IMAGE_ID = "sha256:" + "a" * 64


def build(spec: ServiceSpec, scale: int = 3, rolling: int = 2, **kwargs):
    return swarm_service("owner1", "0123456789abcdef", "shop", "v7", spec, scale, rolling, **kwargs)


def test_the_three_tables_cover_every_field_of_a_service_exactly_once():
    fields = {a.name for a in attrs.fields(ServiceSpec)}
    tables = [set(MAPPED), set(MARIPOSA), set(CHECKED)]
    assert set().union(*tables) == fields, "a ServiceSpec field that is neither mapped, Mariposa's nor checked"
    assert sum(map(len, tables)) == len(fields), "a field in two tables"


def test_a_web_service_maps_to_the_swarm_spec():
    spec = ServiceSpec(
        name="web", image="mariposa-example/busybox:latest", image_id=IMAGE_ID,
        command=("httpd", "-f", "-p", "80"), environment=(("A", "1"),), ports=(PortSpec(80), PortSpec(443, 8443)),
        endpoint_mode="dnsrr", stop_timeout=3, stop_signal="SIGINT", memory=64 * 2**20, cpus=0.5,
        restart="on-failure:4", min_healthy_time=2.5, user="nobody", working_dir="/www", hostname="h",
        read_only=True, cap_add=("NET_ADMIN",), cap_drop=("ALL",), sysctls=(("net.core.somaxconn", "1024"),),
        ulimits=(("nofile", 100, 200),), extra_hosts=(("db", "10.0.0.2"),), dns=("1.1.1.1",), dns_search=("x.org",),
        tags=(("tier", "front"),), tmpfs=("/run:size=1m,mode=1777",), shm_size=2**20,
        volumes=(MountSpec("volume", "data", "/data", labels=(("k", "v"),)), MountSpec("bind", "/srv/x", "/x", True)),
    )
    out = build(spec)
    assert out.ok, out.problems
    body = out.body
    assert body["Name"] == "mariposa-shop-web-01234567"
    assert body["Labels"][LABEL_OWNER] == "owner1" and body["Labels"][LABEL_VERSION] == "v7"
    assert body["Labels"]["tier"] == "front" and body["Labels"][LABEL_SERVICE] == "web"
    container = body["TaskTemplate"]["ContainerSpec"]
    assert LABEL_OWNER not in container["Labels"]  # the local Docker driver must never list a task's container
    assert container["Image"] == IMAGE_ID and container["Args"] == ["httpd", "-f", "-p", "80"]
    assert "Command" not in container  # the image's entrypoint stays
    assert container["Init"] is True and container["StopGracePeriod"] == 3 * NS and container["StopSignal"] == "SIGINT"
    assert container["Env"] == ["A=1"] and container["User"] == "nobody" and container["Dir"] == "/www"
    assert container["ReadOnly"] is True and container["Hostname"] == "h"
    assert container["CapabilityAdd"] == ["CAP_NET_ADMIN"] and container["CapabilityDrop"] == ["ALL"]
    assert container["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert container["Hosts"] == ["10.0.0.2 db"]
    assert container["DNSConfig"] == {"Nameservers": ["1.1.1.1"], "Search": ["x.org"]}
    assert container["Mounts"] == [
        {"Type": "volume", "Source": "mariposa_shop_data", "Target": "/data", "ReadOnly": False,
         "VolumeOptions": {"Labels": {"k": "v"}}},
        {"Type": "bind", "Source": "/srv/x", "Target": "/x", "ReadOnly": True},
        {"Type": "tmpfs", "Target": "/run", "TmpfsOptions": {"SizeBytes": 2**20, "Mode": 0o1777}},
        {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 2**20}},
    ]
    template = body["TaskTemplate"]
    assert template["Resources"] == {"Limits": {"MemoryBytes": 64 * 2**20, "NanoCPUs": NS // 2}}
    assert template["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 4}
    assert template["Networks"] == [{"Target": overlay_name("shop", "0123456789abcdef"), "Aliases": ["web"]}]
    assert body["Mode"] == {"Replicated": {"Replicas": 3}}
    # a fixed host port: the old task holds it on its node, so replacements go stop-first
    assert body["UpdateConfig"] == {"Parallelism": 2, "Delay": 0, "FailureAction": "pause", "Monitor": int(2.5 * NS),
                                    "MaxFailureRatio": 0, "Order": "stop-first"}
    assert body["RollbackConfig"] == body["UpdateConfig"]
    assert body["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host"},
        {"Protocol": "tcp", "TargetPort": 443, "PublishMode": "host", "PublishedPort": 8443}]}


def test_vip_publishes_through_the_ingress_unless_the_host_port_is_fixed():
    spec = ServiceSpec(name="web", image="x", ports=(PortSpec(80), PortSpec(81, 8081)))
    body = build(spec, scale=1).body
    assert body["EndpointSpec"] == {"Mode": "vip", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishMode": "host", "PublishedPort": 8081}]}
    plain = build(ServiceSpec(name="web", image="x")).body
    assert plain["UpdateConfig"]["Order"] == "start-first" and plain["EndpointSpec"] == {"Mode": "vip"}
    assert plain["TaskTemplate"]["ContainerSpec"]["Image"] == "x"  # no pin: the reference as written
    assert plain["TaskTemplate"]["RestartPolicy"] == {"Condition": "any"}
    assert build(ServiceSpec(name="w", image="x", init=False)).body["TaskTemplate"]["ContainerSpec"]["Init"] is False


def test_entrypoint_and_command_as_swarm_reads_them():
    def container(**kw):
        return build(ServiceSpec(name="w", image="x", **kw)).body["TaskTemplate"]["ContainerSpec"]

    assert container(entrypoint=("/bin/sh", "-c"), command=("echo hi",)) | {} == container(
        entrypoint=("/bin/sh", "-c"), command=("echo hi",))
    both = container(entrypoint=("/bin/sh", "-c"), command=("echo hi",))
    assert both["Command"] == ["/bin/sh", "-c"] and both["Args"] == ["echo hi"]
    dropped = container(entrypoint=(), command=("httpd", "-f"))
    assert dropped["Command"] == ["httpd", "-f"] and "Args" not in dropped
    refused = build(ServiceSpec(name="w", image="x", entrypoint=()))
    assert [p.field for p in refused.problems] == ["entrypoint"]


def test_what_swarm_cannot_express_is_refused_with_the_reason():
    spec = ServiceSpec(name="w", image="x", devices=("/dev/fuse:/dev/fuse:rwm",), privileged=True,
                       network_mode="host", tmpfs=("/t:noexec",), secrets=("db_password",), mdata=(("conf", "x"),),
                       affinity=("node.labels.zone==a",))
    out = build(spec)
    assert not out.ok
    reasons = {p.field: p.reason for p in out.problems}
    assert set(reasons) == {"devices", "privileged", "network_mode", "tmpfs", "secrets", "mdata", "affinity"}
    assert reasons["tmpfs"] == "tmpfs /t:noexec: option 'noexec' has no Swarm equivalent (size= and mode= do)"
    assert reasons["secrets"] == "secret 'db_password' has no Swarm secret yet: make it before the service"
    for kind in ("scheduled", "event"):
        assert [p.field for p in build(ServiceSpec(name="w", image="x", service_type=kind)).problems] == [
            "service_type"]
    assert [p.field for p in build(ServiceSpec(name="w", image="x", compute_type="kvm", disk=2**30)).problems] == [
        "compute_type", "disk"]


def test_secrets_and_mdata_become_references_to_swarm_objects():
    spec = ServiceSpec(name="w", image="x", secrets=("db",), mdata=(("app.conf", "{{ .meta.x }}"),))
    out = build(spec, secrets={"db": ("sid", "mariposa-shop-db-1")}, configs={"app.conf": ("cid", "mariposa-c")})
    container = out.body["TaskTemplate"]["ContainerSpec"]
    assert container["Secrets"] == [{"SecretID": "sid", "SecretName": "mariposa-shop-db-1",
                                     "File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 0o444}}]
    assert container["Configs"] == [{"ConfigID": "cid", "ConfigName": "mariposa-c", "File": {
        "Name": "/run/mariposa/mdata/app.conf", "UID": "0", "GID": "0", "Mode": 0o444}}]


def test_the_placement_goes_in_and_its_order_and_problems_with_it():
    placement = Placement(("node.labels.zone==a",), ({"Spread": {"SpreadDescriptor": "node.labels.rack"}},), 1,
                          "stop-first", (Problem("affinity[1]", "no"),), ("one per node",))
    out = build(ServiceSpec(name="w", image="x", affinity=("a",)), placement=placement)
    assert out.body["TaskTemplate"]["Placement"] == {
        "Constraints": ["node.labels.zone==a"], "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.rack"}}],
        "MaxReplicas": 1}
    assert out.body["UpdateConfig"]["Order"] == "stop-first"
    assert out.problems == (Problem("affinity[1]", "no"),) and "one per node" in out.messages


# ---- every field set is mapped, Mariposa's, or refused ---------------------------------------------

_VALUES = {
    "package": "small", "memory": 2**26, "cpus": 1.5, "tags": (("a", "b"),), "ports": (PortSpec(80),),
    "endpoint_mode": "dnsrr", "dns": ("1.1.1.1",), "dns_search": ("x",), "environment": (("K", "v"),),
    "entrypoint": ("/bin/sh",), "command": ("true",), "restart": "no", "stop_timeout": 1,
    "preserve_stopped": "always", "scale": 2, "min_healthy_time": 1.0, "progress_deadline": 5.0, "user": "u",
    "working_dir": "/w", "cap_add": ("NET_ADMIN",), "cap_drop": ("MKNOD",), "devices": ("/dev/a:/dev/a:r",),
    "extra_hosts": (("h", "1.2.3.4"),), "hostname": "h", "read_only": True, "tmpfs": ("/t",), "shm_size": 2**20,
    "sysctls": (("net.a", "1"),), "ulimits": (("nofile", 1, 2),), "stop_signal": "SIGINT", "init": False,
    "network_mode": "host", "privileged": True, "volumes": (MountSpec("tmpfs", None, "/m"),), "secrets": ("s",),
    "pull": "always", "image_id": IMAGE_ID, "meta_keys": ("k",), "meta_digest": "d", "on_meta_change": "none",
    "secret_env": True, "mdata": (("k", "v"),), "mdata_signal": "SIGHUP", "service_type": "scheduled",
    "compute_type": "kvm", "accel": "tcg", "boot_timeout": 5.0, "machine": "q35", "disk": 2**30, "kernel": "/k",
    "initrd": "/i", "cmdline": "c", "schedule": ("* * * * *",), "time_zone": "Europe/Paris", "retries": 2,
    "affinity": ("node.role==manager",), "depends_on": (("db", "service_started"),),
}


def _at(body: dict, paths: str):
    """The value at the first dotted path of a MAPPED entry ("A.B.C, D (why)")."""
    node = body
    for key in paths.split(",")[0].split(" ")[0].split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(sorted(_VALUES)), max_size=12), st.booleans())
def test_every_field_set_is_mapped_left_to_mariposa_or_refused(chosen, placed):
    spec = ServiceSpec(name="w", image="x", **{k: _VALUES[k] for k in chosen})
    placement = Placement(("node.role==manager",)) if placed else None
    out = build(spec, placement=placement, secrets={})
    refused = {p.field for p in out.problems}
    for field in chosen:
        assert field in MAPPED or field in MARIPOSA or field in refused or field in CHECKED, field
        if field in MAPPED and field not in refused:
            assert _at(out.body, MAPPED[field]) is not None, f"{field} is mapped but not in the body"
        if field in CHECKED and field not in refused:
            # mapped for this value: it shows in the body
            assert field in ("entrypoint", "tmpfs"), field
    if "affinity" in chosen:
        assert placed or "affinity" in refused  # never dropped for want of a placement
    if "devices" in chosen:
        assert "devices" in refused
    if "secrets" in chosen:
        assert "secrets" in refused  # no Swarm secret was made for it
    if not out.problems:
        assert out.body["Mode"]["Replicated"]["Replicas"] == 3
