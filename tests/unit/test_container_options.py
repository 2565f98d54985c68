"""The container options in docker compose's spelling (issue 12): each parses to the spec, each
refusal names its line and column, the ones that give a container the host need
allow_privileged, and the Docker driver puts each where the Engine expects it."""

from __future__ import annotations

import pytest

from mariposa.drivers.docker import container_config
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.model import CreateRequest, ServiceSpec
from tests.unit.test_manifest import service, service_problem

EVERYTHING = """
image: busybox
user: "1000:1000"
working_dir: /srv
cap_add: [NET_BIND_SERVICE, cap_sys_nice]
cap_drop: [ALL]
extra_hosts: ["db.local:10.0.0.5", "v6=::1"]
hostname: web-1
read_only: true
tmpfs: ["/run:size=64m", /tmp]
shm_size: 128m
sysctls: {net.core.somaxconn: 1024}
ulimits: {nofile: {soft: 1024, hard: 65535}, nproc: 512}
stop_signal: INT
init: false
"""


def test_every_option_reaches_the_spec():
    s = service(EVERYTHING)
    assert (s.user, s.working_dir, s.hostname, s.read_only, s.init) == ("1000:1000", "/srv", "web-1", True, False)
    assert s.cap_add == ("NET_BIND_SERVICE", "SYS_NICE") and s.cap_drop == ("ALL",)
    assert s.extra_hosts == (("db.local", "10.0.0.5"), ("v6", "::1"))
    assert s.tmpfs == ("/run:size=64m", "/tmp") and s.shm_size == 128 * 1024**2
    assert s.sysctls == (("net.core.somaxconn", "1024"),)
    assert s.ulimits == (("nofile", 1024, 65535), ("nproc", 512, 512))
    assert s.stop_signal == "SIGINT"


def test_options_left_out_do_not_change_the_hash_of_existing_services():
    """A service that uses none of them keeps its hash: upgrading Mariposa replaces nothing."""
    plain = service("image: busybox\ncommand: sleep 1")
    assert plain.instance_fields() == {"name": "web", "image": "busybox", "command": ("sleep", "1")}
    assert service("image: busybox\ncommand: sleep 1\ninit: true").spec_hash == plain.spec_hash
    assert service("image: busybox\ncommand: sleep 1\ninit: false").spec_hash != plain.spec_hash


@pytest.mark.parametrize(("body", "where", "message"), [
    ("user: 'a b'", (4, 11), "user 'a b' must be NAME, UID, NAME:GROUP or UID:GID"),
    ("working_dir: srv", (4, 18), "must be an absolute path"),
    ("cap_add: [NET_BIND, CHOWN]", (4, 15), "unknown capability 'NET_BIND'"),
    ("cap_drop: [CHOWN, chown]", (4, 23), "capability CHOWN is given twice"),
    ("extra_hosts: [db]", (4, 19), "extra host 'db' must be HOST:IP"),
    ("extra_hosts: {db: 10.0.0.300}", (4, 23), "'10.0.0.300' is not an IP address"),
    ("hostname: web_1", (4, 15), "must be one DNS label"),
    ("read_only: yes please", (4, 16), "expected true or false"),
    ("tmpfs: [run]", (4, 13), "the path must be absolute"),
    ("shm_size: lots", (4, 15), "lots"),
    ("sysctls: {somaxconn: 1}", (4, 15), "must be a dotted kernel parameter"),
    ("ulimits: {nofile: {soft: 10, hard: 5}}", (4, 23), "soft 10 is above hard 5"),
    ("ulimits: {nofiles: 5}", (4, 15), "unknown ulimit 'nofiles'; did you mean 'nofile'?"),
    ("stop_signal: SIGFOO", (4, 18), "unknown stop_signal 'SIGFOO'"),
    ("network_mode: overlay", (4, 19), "unknown network_mode 'overlay'"),
    ("devices: ['/dev/fuse:/dev/fuse:rwx']", (4, 15), "permissions are some of r, w and m"),
    ("healthchecks:\n  - type: command\n    command: 'true'\n    network: x", (7, 9), "'network' is not supported"),
    ("healthchecks:\n  - type: tcp\n    port: 80\n    user: nobody", (7, 9), "'user' only applies to command checks"),
])
def test_refusals_name_line_and_column(body, where, message):
    p = service_problem("image: busybox\n" + body)
    assert (p.line, p.column) == where and message in p.message, p


@pytest.mark.parametrize(("body", "what"), [
    ("privileged: true", "privileged: true"),
    ("network_mode: host", "network_mode: host"),
    ("devices: [/dev/fuse]", "device /dev/fuse"),
    ("cap_add: [SYS_ADMIN]", "capability SYS_ADMIN"),
    ("cap_add: [all]", "capability ALL"),
])
def test_options_that_give_the_container_the_host_need_allow_privileged(body, what):
    p = service_problem("image: busybox\n" + body)
    assert p.message == (f"{what} gives the container control of the host; "
                         "set allow_privileged = true in mariposa.toml to allow it")
    assert service("image: busybox\n" + body, allow_privileged=True)


def test_host_network_publishes_no_ports_and_takes_no_names():
    with pytest.raises(ManifestError) as caught:
        parse_manifest("services:\n  web:\n    image: busybox\n    network_mode: host\n    ports: ['8080:80']\n"
                       "    hostname: h\n", allow_privileged=True)
    found = [(p.line, p.message) for p in caught.value.problems]
    assert any(line == 5 and "is not published with network_mode: host" in m for line, m in found)
    assert any(line == 6 and "'hostname' does not apply with network_mode: host" in m for line, m in found)


def request(spec: ServiceSpec) -> CreateRequest:
    return CreateRequest(instance_id="i1", owner="o", project_id="p" * 32, project_name="p", version_id="v",
                         created=0.0, spec=spec)


def test_the_docker_driver_puts_each_option_where_the_engine_reads_it():
    body = container_config(request(service(EVERYTHING)), "net")
    host = body["HostConfig"]
    assert (body["User"], body["WorkingDir"], body["Hostname"], body["StopSignal"]) == (
        "1000:1000", "/srv", "web-1", "SIGINT")
    assert host["CapAdd"] == ["CAP_NET_BIND_SERVICE", "CAP_SYS_NICE"] and host["CapDrop"] == ["ALL"]
    assert host["ExtraHosts"] == ["db.local:10.0.0.5", "v6:::1"]
    assert host["ReadonlyRootfs"] is True and host["Init"] is False
    assert host["Tmpfs"] == {"/run": "size=64m", "/tmp": ""} and host["ShmSize"] == 128 * 1024**2
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 65535},
                               {"Name": "nproc", "Soft": 512, "Hard": 512}]
    assert "Privileged" not in host and host["NetworkMode"] == "net"

    powerful = service("image: busybox\nprivileged: true\nnetwork_mode: host\ndevices: ['/dev/fuse:/dev/fuse:r']",
                       allow_privileged=True)
    body = container_config(request(powerful), "net")
    assert body["HostConfig"]["Privileged"] is True and body["HostConfig"]["NetworkMode"] == "host"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {}}
    assert body["HostConfig"]["Devices"] == [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse",
                                              "CgroupPermissions": "r"}]


def test_a_plain_service_gets_the_engine_defaults():
    host = container_config(request(service("image: busybox")), "net")["HostConfig"]
    assert host["Init"] is True
    assert not {"CapAdd", "CapDrop", "Devices", "ExtraHosts", "ReadonlyRootfs", "Tmpfs", "ShmSize", "Sysctls",
                "Ulimits", "Privileged"} & set(host)
