"""Issue 12's networks: and depends_on: — validation (line:column for every problem, cycles
named), the planner's gating of a service's first instances, and the whole daemon on the fake
driver: a dependent service waits, says so, and starts once its dependency runs."""

from __future__ import annotations

import textwrap

import attrs
import httpx
import pytest
import trio

from mariposa.converge.depends import unmet
from mariposa.converge.plan import plan
from mariposa.daemon import DaemonConfig, run_daemon
from mariposa.drivers.fake import FakeDriver
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.model import (
    Create,
    HealthCheck,
    Instance,
    NetworkRef,
    ServiceGoal,
    ServiceSpec,
    Wait,
    shared_network_name,
)


def parse(text: str):
    return parse_manifest(textwrap.dedent(text), "m.yaml")


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ManifestError) as info:
        parse(text)
    return [(p.line, p.column, p.message) for p in info.value.problems]


# ---- validation -------------------------------------------------------------------------------


def test_networks_and_depends_on_in_compose_spelling():
    spec = parse("""
        services:
          web:
            image: busybox
            networks: [default, shared, outside]
            depends_on: {db: {condition: service_healthy}, cache: {condition: service_started}}
          worker:
            image: busybox
            depends_on: [db]
            networks: {shared: }
          db: {image: busybox}
          cache: {image: busybox}
        networks:
          shared: {}
          outside: {external: true, name: corp_net}
        """)
    web, worker = spec.service("web"), spec.service("worker")
    assert web and worker
    assert web.networks == (NetworkRef("shared"), NetworkRef("outside", True, "corp_net"))
    assert web.depends_on == (("db", "service_healthy"), ("cache", "service_started"))
    assert worker.depends_on == (("db", "service_started"),)  # the list form means service_started
    assert worker.networks == (NetworkRef("shared"),)
    assert web.networks[0].runtime("shop") == shared_network_name("shop", "shared") == "shop_shared"
    assert web.networks[1].runtime("shop") == "corp_net"
    external_by_own_name = parse("""
        services: {web: {image: busybox, networks: [edge]}}
        networks: {edge: {external: true}}
        """).services[0]
    assert external_by_own_name.networks == (NetworkRef("edge", True, "edge"),)


def test_depends_on_never_replaces_instances_and_no_networks_keeps_the_hash():
    plain = parse("services: {web: {image: busybox}, db: {image: busybox}}").service("web")
    waiting = parse("services: {web: {image: busybox, depends_on: [db]}, db: {image: busybox}}").service("web")
    assert plain and waiting and plain.spec_hash == waiting.spec_hash
    joined = parse("""
        services: {web: {image: busybox, networks: [default, s]}}
        networks: {s: {}}
        """).service("web")
    assert joined and joined.spec_hash != plain.spec_hash  # a new network means new instances


def test_unknown_network_names_and_options_are_refused_where_written():
    found = problems("""
        services:
          web:
            image: busybox
            networks: [default, shraed, default]
          api:
            image: busybox
            network_mode: host
            networks: [shared]
        networks:
          shared: {}
          default: {}
          named: {name: real}
          odd: {driver: overlay}
          bad name!: {}
        """)
    assert found == [
        (5, 25, "unknown network 'shraed': the top-level 'networks:' declares shared; did you mean 'shared'?"),
        (5, 33, "network 'default' is listed twice"),
        (8, 19, "network_mode: host gives the container control of the host; set allow_privileged = true in "
                "mariposa.toml to allow it"),
        (12, 3, "'default' is the project's own network; it needs no declaration"),
        (13, 11, "'name' only applies to an external network; the project's own network 'named' is named "
                 "PROJECT_named on the runtime"),
        (14, 9, "unknown network option 'driver' (a network is external: true [with name: REAL_NAME], or the "
                "project's own)"),
        (15, 3, "invalid network name 'bad name!': letters, digits, '_', '.' and '-', at most 63"),
    ]
    with pytest.raises(ManifestError) as info:
        parse_manifest("services: {api: {image: busybox, network_mode: host, networks: [s]}}\nnetworks: {s: {}}\n",
                       "m.yaml", allow_privileged=True)
    assert [(p.line, p.column, p.message) for p in info.value.problems] == [
        (1, 54, "'networks' does not apply with network_mode: host")]


def test_unknown_dependencies_and_conditions_are_refused_where_written():
    found = problems("""
        services:
          web:
            image: busybox
            depends_on:
              db: {condition: service_healty}
              dbb: {}
              web: {}
              cache: {restart: true}
          db: {image: busybox}
          cache:
            image: busybox
            depends_on: [db, 7]
        """)
    assert found == [
        (6, 23, "unknown depends_on condition 'service_healty'; did you mean 'service_healthy'? (expected one of "
                "service_started, service_healthy)"),
        (7, 7, "unknown service 'dbb' in depends_on: the project has web, db, cache; did you mean 'db'?"),
        (8, 7, "a service cannot depend on itself ('web')"),
        (9, 15, "unknown depends_on option 'restart'"),
        (13, 22, "expected a service name, got an integer"),
    ]


@pytest.mark.parametrize("text, where, cycle", [
    ("""
     services:
       web: {image: busybox, depends_on: [api]}
       api: {image: busybox, depends_on: {web: {condition: service_healthy}}}
     """, (3, 25), "web -> api -> web"),
    ("""
     services:
       front: {image: busybox, depends_on: [web]}
       web: {image: busybox, depends_on: [api]}
       api: {image: busybox, depends_on: [db]}
       db: {image: busybox, depends_on: [web]}
     """, (4, 25), "web -> api -> db -> web"),
])
def test_a_dependency_cycle_is_refused_naming_it(text, where, cycle):
    assert problems(text) == [(*where, f"depends_on cycle: {cycle}")]


# ---- the planner ------------------------------------------------------------------------------

WEB = ServiceSpec(name="web", image="busybox", depends_on=(("db", "service_healthy"),))
DB = ServiceSpec(name="db", image="busybox", healthchecks=(HealthCheck(type="tcp", port=5432),))


def goal(spec: ServiceSpec, scale: int = 1, **kw) -> ServiceGoal:
    return ServiceGoal(project_id="p", project_name="p", version_id="v", spec=spec, scale=scale, **kw)


def inst(spec: ServiceSpec, n: int, state: str = "running", **kw) -> Instance:
    return Instance(id=f"{spec.name}{n}", runtime_id=f"r{spec.name}{n}", name=f"p-{spec.name}-{n}", project_id="p",
                    service=spec.name, spec_hash=spec.spec_hash, version_id="v", state=state, created=float(n),
                    compute_type="docker", **kw)


def test_a_service_starting_from_nothing_waits_for_its_dependencies():
    steps = plan(goal(WEB, 2), [], now=100.0, waiting="waiting for db to be healthy (0 of 1 healthy)")
    assert steps.steps == (Wait(101.0, "waiting for db to be healthy (0 of 1 healthy)"),)
    assert steps.summary() == "wait: waiting for db to be healthy (0 of 1 healthy)"
    assert plan(goal(WEB, 2), [], now=100.0).count(Create) == 2  # nothing to wait for: created


def test_a_running_service_never_waits_scale_up_and_rollouts_go_on():
    running = [inst(WEB, 1, started_at=1.0)]
    steps = plan(goal(WEB, 3), running, now=100.0, waiting="waiting for db to be healthy (0 of 1 healthy)")
    assert steps.count(Create) == 2 and not any(isinstance(s, Wait) for s in steps.steps)
    old = attrs.evolve(running[0], spec_hash="older")
    steps = plan(goal(WEB, 1), [old], now=100.0, waiting="waiting for db to be healthy (0 of 1 healthy)")
    assert steps.count(Create) == 1  # a rollout makes its new instance whatever the dependency does
    crashed = [inst(WEB, 1, state="exited", exit_code=1)]
    steps = plan(goal(WEB, 1), crashed, now=100.0, waiting="waiting for db")
    assert not any(isinstance(s, Wait) and s.reason == "waiting for db" for s in steps.steps)


def test_ready_means_every_goal_instance_running_or_passing_its_checks():
    web_started = attrs.evolve(WEB, depends_on=(("db", "service_started"),))
    db2 = goal(DB, 2)
    one = [inst(DB, 1, health="healthy"), inst(DB, 2, health="starting")]
    assert unmet(goal(WEB), {"db": (db2, one)}) == "waiting for db to be healthy (1 of 2 healthy)"
    assert unmet(goal(web_started), {"db": (db2, one)}) is None  # both run
    both = [attrs.evolve(i, health="healthy") for i in one]
    assert unmet(goal(WEB), {"db": (db2, both)}) is None
    retired = [both[0], attrs.evolve(both[1], retired=True)]
    assert unmet(goal(WEB), {"db": (db2, retired)}) == "waiting for db to be healthy (1 of 2 healthy)"
    unchecked = goal(attrs.evolve(DB, healthchecks=()), 1)
    assert unmet(goal(WEB), {"db": (unchecked, [inst(DB, 1)])}) is None  # no checks: healthy once running
    assert unmet(goal(WEB), {"db": (unchecked, [inst(DB, 1, state="exited")])}) == \
        "waiting for db to be healthy (0 of 1 healthy)"
    assert unmet(goal(WEB), {"db": (goal(DB, 0), [])}) == "waiting for db (its scale is 0)"
    assert unmet(goal(WEB), {"db": (goal(DB, desired="stopped"), [])}) == \
        "waiting for db (it is stopped: mariposa -j p service start db)"


# ---- the daemon on the fake driver ------------------------------------------------------------

DEPENDENT = """
services:
  db:
    image: busybox
    command: sleep 1000
    scale: 0
  web:
    image: busybox
    command: sleep 1000
    depends_on: [db]
"""


@pytest.fixture
async def daemon(tmp_path, nursery):
    driver = FakeDriver(images=("busybox", "crashy"), crash_images=("crashy",))
    sock = str(tmp_path / "m.sock")
    config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=sock, resync=0.5, manifest_dir=None)
    await nursery.start(run_daemon, config, {"docker": driver})
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://m")
    yield client, driver
    await client.aclose()


async def _until(fn, timeout: float = 10.0):
    with trio.fail_after(timeout):
        while not (found := await fn()):
            await trio.sleep(0.02)
    return found


async def test_a_dependent_service_says_it_waits_then_starts_after_its_dependency(daemon):
    client, driver = daemon
    r = await client.post("/v1/projects", json={"name": "shop", "manifest": DEPENDENT})
    assert r.status_code == 200, r.text

    async def web_waiting():
        web = (await client.get("/v1/projects/shop/services/web")).json()
        return web if web.get("waiting") else None

    web = await _until(web_waiting)
    assert web["waiting"] == "waiting for db (its scale is 0)" and web["instances"] == 0
    events = (await client.get("/v1/events", params={"project": "shop"})).json()
    assert any(e["type"] == "service.waiting" and e["message"] == "web waiting for db (its scale is 0)"
               for e in events), events

    r = await client.post("/v1/projects/shop/services/db/scale", json={"scale": "1"})
    assert r.status_code == 200, r.text

    async def web_up():
        return [i for i in driver.instances.values() if i.service == "web" and i.running]

    await _until(web_up)
    creates = [c for c in driver.calls if c[0] == "create"]
    services = [next(i.service for i in driver.instances.values() if i.id == c[1]) for c in creates]
    assert services == ["db", "web"]  # db's instance was made (and ran) before web's first
    web = (await client.get("/v1/projects/shop/services/web")).json()
    assert web["waiting"] is None


async def test_a_dependency_that_never_runs_keeps_the_service_waiting_visibly_until_stopped(daemon):
    client, driver = daemon
    manifest = DEPENDENT.replace("    scale: 0\n", "").replace("image: busybox\n    command: sleep 1000\n    \n", "")
    manifest = manifest.replace("  db:\n    image: busybox", "  db:\n    image: crashy")
    r = await client.post("/v1/projects", json={"name": "stuck", "manifest": manifest})
    assert r.status_code == 200, r.text

    async def web_waiting():
        web = (await client.get("/v1/projects/stuck/services/web")).json()
        return web if web.get("waiting") else None

    web = await _until(web_waiting)
    assert web["waiting"] == "waiting for db to be started (0 of 1 running)"
    assert web["task"]["state"] == "active" and web["task"]["progress"]["waiting"] == web["waiting"]
    r = await client.post("/v1/projects/stuck/stop")
    assert r.status_code == 200, r.text

    async def web_stopped():
        web = (await client.get("/v1/projects/stuck/services/web")).json()
        return web if web["desired"] == "stopped" and web["task"] is None else None

    web = await _until(web_stopped)
    assert web["waiting"] is None
    assert not [i for i in driver.instances.values() if i.service == "web"]  # never made


async def test_shared_networks_on_the_fake_runtime(daemon):
    client, driver = daemon
    made = """
services: {api: {image: busybox, command: sleep 1000, networks: [default, shared]}}
networks: {shared: {}}
"""
    joins = """
services: {web: {image: busybox, command: sleep 1000, networks: [mesh]}}
networks: {mesh: {external: true, name: alpha_shared}}
"""
    r = await client.post("/v1/projects", json={"name": "beta", "manifest": joins})
    assert r.status_code == 400 and "external network alpha_shared (networks.mesh) does not exist" in r.text
    assert (await client.get("/v1/projects/beta")).status_code == 404  # refused: nothing changed
    r = await client.post("/v1/projects", json={"name": "alpha", "manifest": made})
    assert r.status_code == 200, r.text
    await _until(lambda: _has(driver, "api"))
    got = (await client.get("/v1/projects/alpha")).json()
    assert got["networks"] == [{"name": "shared", "runtime_name": "alpha_shared", "external": False,
                                "services": ["api"]}]
    r = await client.post("/v1/projects", json={"name": "beta", "manifest": joins})
    assert r.status_code == 200, r.text
    await _until(lambda: _has(driver, "web"))
    assert (await client.get("/v1/projects/beta/networks")).json() == [
        {"name": "mesh", "runtime_name": "alpha_shared", "external": True, "services": ["web"], "exists": True}]

    r = await client.delete("/v1/projects/alpha")
    task = r.json()["tasks"][0]

    async def finished():
        t = (await client.get(f"/v1/queue/{task['id']}")).json()
        return t if t["state"] in ("completed", "failed") else None

    done = await _until(finished)
    assert done["state"] == "completed" and "network alpha_shared is kept, still in use by beta-web-" in done["message"]
    assert "alpha_shared" in driver.runtime.shared  # beta's web is still on it
    r = await client.delete("/v1/projects/beta")
    await _until(lambda: _gone(client, "beta"))
    assert "alpha_shared" in driver.runtime.shared  # beta only joined it: never removed by beta


async def _has(driver, service: str) -> bool:
    return any(i.service == service and i.running for i in driver.instances.values())


async def _gone(client, name: str) -> bool:
    return (await client.get(f"/v1/projects/{name}")).status_code == 404
