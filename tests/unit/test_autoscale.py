"""Metric triggers and autoscale: the manifest's refusals (each at its line:column), the decision
(metrics/autoscale.py) on hand-made samples, the manual scale's range, and the loop end to end
on the fake driver with trio's MockClock (a stand-in collector samples ``FakeDriver.stats``)."""

from __future__ import annotations

import attrs
import pytest
import trio

from mariposa.clock import TrioClock
from mariposa.errors import Conflict
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.metrics.autoscale import decide, reason
from mariposa.metrics.autoscaler import Autoscaler
from mariposa.metrics.collector import Collector
from mariposa.metrics.history import MetricsHistory, Sample
from mariposa.model import MetricTriggerSpec
from tests.unit.conftest import ROOT, start_core

BURNER = """services:
  web:
    image: busybox
    command: sh -c 'while :; do :; done'
    package: small
    memory: 256m
    triggers:
      - name: highcpu
        metric: cpu
        operator: ">"
        value: 50%
        time: 20s
        action: increment
      - {name: idle, metric: cpu, operator: "<", value: 10, time: 20s, action: decr}
      - {name: web-up, action: scale, scale: "+1"}
    autoscale:
      enable: true
      min: 1
      max: 3
      retrigger_delay: 20s
  db:
    image: busybox
"""


# the in-process core has no package catalogue
PLAIN = BURNER.replace("    package: small\n", "")


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "m.yaml")
    return [str(p) for p in info.value.problems]


# ---- the manifest -----------------------------------------------------------------------------


def test_metric_and_public_triggers_share_the_list():
    web = parse_manifest(BURNER, "m.yaml").service("web")
    assert [(t.name, t.metric, t.operator, t.value, t.time, t.action, t.instances) for t in web.metric_triggers] == [
        ("highcpu", "cpu", ">", 50.0, 20.0, "increment", 1), ("idle", "cpu", "<", 10.0, 20.0, "decrement", 1)]
    assert [t.name for t in web.triggers] == ["web-up"]
    assert (web.autoscale.enable, web.autoscale.min, web.autoscale.max, web.autoscale.retrigger_delay) == (
        "true", 1, 3, 20.0)


def test_the_issue_example_and_the_spec_spellings():
    text = BURNER.replace("value: 50%", "value: 80%").replace("time: 20s", "time: 5 minutes", 1) \
        .replace("max: 3", "max: 10").replace("enable: true", "enable: notify-only") \
        .replace("value: 10, time: 20s", "value: 512m, time: 2m").replace("metric: cpu, operator: \"<\"",
                                                                           "metric: memory, operator: \"<=\"")
    web = parse_manifest(text, "m.yaml").service("web")
    assert web.metric_triggers[0].time == 300.0 and web.autoscale.enable == "notify"
    assert web.metric_triggers[1].value_bytes == 512 << 20 and web.metric_triggers[1].value is None
    for written, read in (("1", "true"), ("0", "false"), ("false", "false"), ("notify", "notify")):
        spec = parse_manifest(BURNER.replace("enable: true", f"enable: {written}"), "m.yaml").service("web")
        assert spec.autoscale.enable == read


def test_triggers_without_autoscale_notify_and_change_no_instance():
    text = BURNER.split("    autoscale:")[0] + "  db:\n    image: busybox\n"
    web = parse_manifest(text, "m.yaml").service("web")
    assert web.autoscale is None and len(web.metric_triggers) == 2
    plain = parse_manifest(text.split("    triggers:")[0] + "  db:\n    image: busybox\n", "m.yaml").service("web")
    assert web.spec_hash == plain.spec_hash == parse_manifest(BURNER, "m.yaml").service("web").spec_hash


def test_another_service_metric():
    text = BURNER.replace("metric: cpu\n", "metric: service.db.cpu\n")
    assert parse_manifest(text, "m.yaml").service("web").metric_triggers[0].metric == "service.db.cpu"


@pytest.mark.parametrize("old, new, expected", [
    ("metric: cpu\n", "metric: disk\n", "m.yaml:9:17: services.web.triggers[0].metric: unknown metric 'disk'"),
    ("metric: cpu\n", "metric: containermonitor.ram_used\n",
     "m.yaml:9:17: services.web.triggers[0].metric: unknown metric 'containermonitor.ram_used' (expected cpu, "
     "memory, service.NAME.cpu or service.NAME.memory); ContainerPilot"),
    ("metric: cpu\n", "metric: service.nope.cpu\n",
     "m.yaml:9:17: services.web.triggers[0].metric: unknown service 'nope' in metric 'service.nope.cpu'"),
    ("metric: cpu\n", "metric: service.web.cpu\n",
     "m.yaml:9:17: services.web.triggers[0].metric: 'service.web.cpu' is this service's own metric: write 'cpu'"),
    ("metric: cpu\n", "source: cpu\n", "m.yaml:9:9: services.web.triggers[0].source: 'source' is the spec's other"),
    ('operator: ">"', 'operator: "=="', "m.yaml:10:19: services.web.triggers[0].operator: unknown operator '=='"),
    ('operator: ">"', "operator: 3", "m.yaml:10:19: services.web.triggers[0].operator: expected an operator"),
    ("value: 50%", "value: lots", "m.yaml:11:16: services.web.triggers[0].value: invalid cpu threshold 'lots'"),
    ("value: 50%", "value: 512m", "m.yaml:11:16: services.web.triggers[0].value: invalid cpu threshold '512m'"),
    ("value: 50%", "value: -5", "m.yaml:11:16: services.web.triggers[0].value: a percentage of one core must be"),
    ("value: 50%", "value: [1]", "m.yaml:11:16: services.web.triggers[0].value: expected a percentage"),
    ("time: 20s\n        action: increment", "time: 2h\n        action: increment",
     "m.yaml:12:15: services.web.triggers[0].time: time must be between 1s and 1h"),
    ("time: 20s\n        action: increment", "time: soon\n        action: increment",
     "m.yaml:12:15: services.web.triggers[0].time: invalid duration 'soon'"),
    ("time: 20s\n        action: increment", "time: 0.5\n        action: increment",
     "m.yaml:12:15: services.web.triggers[0].time: time must be between 1s and 1h"),
    ("action: increment", "action: double",
     "m.yaml:13:17: services.web.triggers[0].action: unknown metric trigger action 'double'"),
    ("action: increment", "action: increment\n        instances: 0",
     "m.yaml:14:20: services.web.triggers[0].instances: must be 1 or more, got 0"),
    ("action: increment", "action: increment\n        of_limit: yes please",
     "m.yaml:14:19: services.web.triggers[0].of_limit: expected true or false"),
    ("        action: increment\n", "", "m.yaml:8:9: services.web.triggers[0]: a metric trigger needs an 'action'"),
    ('        operator: ">"\n', "", "m.yaml:8:9: services.web.triggers[0]: a metric trigger needs an 'operator'"),
    ("        metric: cpu\n", "", "m.yaml:8:9: services.web.triggers[0]: a metric trigger needs a 'metric'"),
    ("        value: 50%\n", "", "m.yaml:8:9: services.web.triggers[0]: a metric trigger needs a 'value'"),
    ("      - name: highcpu\n", "      - name: 'high cpu'\n",
     "m.yaml:8:15: services.web.triggers[0].name: invalid trigger name 'high cpu'"),
    ("      - name: highcpu\n", "      - name: web-up\n",
     "m.yaml:15:9: services.web.triggers[2]: trigger 'web-up' is given twice"),
    ("action: increment", "action: increment\n        when: now",
     "m.yaml:14:9: services.web.triggers[0].when: unknown metric trigger option 'when'"),
    ("min: 1", "min: 5", "m.yaml:18:12: services.web.autoscale.min: autoscale min (5) is more than max (3)"),
    ("min: 1", "min: 0", "m.yaml:18:12: services.web.autoscale.min: must be 1 or more, got 0"),
    ("max: 3", "max: many", "m.yaml:19:12: services.web.autoscale.max: expected an integer"),
    ("      max: 3\n", "", "m.yaml:17:15: services.web.autoscale.enable: autoscale enable: true needs a 'max'"),
    ("enable: true", "enable: maybe", "m.yaml:17:15: services.web.autoscale.enable: unknown autoscale enable 'maybe'"),
    ("retrigger_delay: 20s", "retrigger_delay: -1",
     "m.yaml:20:24: services.web.autoscale.retrigger_delay: duration must be more than 0"),
    ("retrigger_delay: 20s", "retrigger_delay: 20s\n      notify_email: ops@example.com",
     "m.yaml:21:7: services.web.autoscale.notify_email: 'notify_email' is out of scope: use a webhook to a mail "
     "relay"),
    ("retrigger_delay: 20s", "retrigger_delay: 20s\n      cooldown: 5",
     "m.yaml:21:7: services.web.autoscale.cooldown: unknown autoscale option 'cooldown'"),
    ("    autoscale:\n", "    autoscale: yes\n    x:\n",
     "m.yaml:16:16: services.web.autoscale: expected a mapping of autoscale options"),
])
def test_bad_metric_triggers_and_autoscale_are_refused_where_written(old, new, expected):
    text = BURNER.replace(old, new, 1)
    assert text != BURNER
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_limits_a_percentage_needs():
    no_package = BURNER.replace("    package: small\n", "").replace("action: increment",
                                                                   "action: increment\n        of_limit: true")
    assert problems(no_package) == [
        "m.yaml:7:9: services.web.triggers[0]: trigger 'highcpu': of_limit needs a cpu limit, and this service has "
        "none: give it a 'package'"]
    no_memory = BURNER.replace("    package: small\n    memory: 256m\n", "")
    no_memory = no_memory.replace("metric: cpu\n", "metric: memory\n")
    assert problems(no_memory)[0].startswith(
        "m.yaml:6:9: services.web.triggers[0]: trigger 'highcpu': a memory percentage is of the memory limit, and "
        "this service has none")
    # another service's limits are the project's to check
    other = BURNER.replace("metric: cpu\n", "metric: service.db.memory\n")
    assert problems(other) == [
        "m.yaml:8:9: services.web.triggers[0]: trigger 'highcpu': a memory percentage is of the memory limit, and "
        "service 'db' has none: give it 'memory' (or a 'package'), or use a size (value: 512m)"]
    assert parse_manifest(other.replace("  db:\n    image: busybox\n", "  db:\n    image: busybox\n    memory: 1g\n"),
                          "m.yaml")
    assert problems(BURNER.replace("metric: cpu\n", "metric: memory\n").replace(
        "action: increment", "action: increment\n        of_limit: true"))[0].startswith(
        "m.yaml:14:9: services.web.triggers[0].of_limit: 'of_limit' is for cpu")
    assert problems(BURNER.replace("metric: cpu\n", "metric: memory\n").replace("value: 50%", "value: 150%"))[0] \
        .startswith("m.yaml:11:16: services.web.triggers[0].value: a percentage of the limit must be between 0 and 100")


def test_only_continuous_services_autoscale():
    text = BURNER.replace("    image: busybox\n    command:",
                          "    service_type: event\n    image: busybox\n    command:", 1)
    found = problems(text)
    assert found == [
        "m.yaml:8:5: services.web.triggers: metric triggers are only for continuous services (service_type event: its "
        "instances are runs, not a scale to change)",
        "m.yaml:17:5: services.web.autoscale: 'autoscale' is only for continuous services (service_type event: its "
        "instances are runs, started by its schedule or trigger)"]


def test_a_starting_scale_outside_the_range_is_refused():
    found = problems(BURNER.replace("    package: small\n", "    package: small\n    scale: 5\n"))
    assert found == ["m.yaml:6:12: services.web.scale: scale 5 is outside autoscale's range 1-3: the scale it "
                     "starts at is within the range"]


def test_names_are_unique_across_both_kinds_in_the_project():
    text = BURNER.replace("  db:\n    image: busybox\n",
                          "  db:\n    image: busybox\n    triggers: [{name: highcpu, action: stop}]\n")
    assert problems(text) == ["m.yaml:23:23: services.db.triggers[0].name: trigger name 'highcpu' is taken by "
                              "service 'web': trigger names are unique in a project"]


# ---- the decision -----------------------------------------------------------------------------


def sample(when: float, cpu: float, memory: int = 100, limit: int | None = 1000, cpu_limit: float | None = None):
    return Sample(when=when, cpu=cpu, memory=memory, memory_limit=limit, cpu_limit=cpu_limit, net_rx=0, net_tx=0,
                  block_read=0, block_write=0)


WEB = parse_manifest(BURNER, "m.yaml").service("web")


def series(cpu: float, start: float, end: float, step: float = 2.0) -> list[Sample]:
    out, t = [], start
    while t <= end:
        out.append(sample(t, cpu))
        t += step
    return out


def test_a_window_held_and_covered_decides():
    outcome = decide(WEB, 1, {"web": [series(95, 78, 100)]}, 100.0, None, 2.0)
    assert outcome.decision is not None and outcome.decision.target == 2
    assert outcome.decision.reason == "highcpu: cpu 95% > 50% for 20s"


def test_a_window_not_covered_or_broken_decides_nothing():
    assert decide(WEB, 1, {"web": [series(95, 84, 100)]}, 100.0, None, 2.0).decision is None  # starts late
    dip = series(95, 78, 100)
    dip[5] = sample(dip[5].when, 40)
    assert decide(WEB, 1, {"web": [dip]}, 100.0, None, 2.0).decision is None
    gap = [s for s in series(95, 78, 100) if not 86 <= s.when <= 92]
    assert decide(WEB, 1, {"web": [gap]}, 100.0, None, 2.0).decision is None
    stale = series(95, 70, 94)
    assert decide(WEB, 1, {"web": [stale]}, 100.0, None, 2.0).decision is None


def test_the_metric_is_the_mean_over_instances():
    hot, cold = series(95, 78, 100), series(0, 78, 100)
    assert decide(WEB, 2, {"web": [hot, cold]}, 100.0, None, 2.0).decision is None  # mean 47.5
    assert decide(WEB, 2, {"web": [hot, series(20, 78, 100)]}, 100.0, None, 2.0).decision.target == 3


def test_bounds_and_retrigger_delay():
    hot = {"web": [series(95, 78, 100)]}
    assert decide(WEB, 3, hot, 100.0, None, 2.0).decision is None  # at max
    assert decide(WEB, 1, hot, 100.0, 85.0, 2.0).decision is None  # scaled 15 s ago
    assert decide(WEB, 1, hot, 100.0, 80.0, 2.0).decision.target == 2
    idle = {"web": [series(1, 78, 100)]}
    assert decide(WEB, 3, idle, 100.0, None, 2.0).decision.target == 2
    assert decide(WEB, 1, idle, 100.0, None, 2.0).decision is None  # at min


def test_memory_of_a_limit_the_instances_lack_cannot_apply():
    trigger = MetricTriggerSpec(name="fat", metric="memory", operator=">", value=50.0, time=10.0)
    spec = attrs.evolve(WEB, metric_triggers=(trigger,))
    unlimited = [[sample(t, 0, memory=900, limit=None) for t in range(88, 101, 2)]]
    outcome = decide(spec, 1, {"web": unlimited}, 100.0, None, 2.0)
    assert outcome.decision is None and "no memory limit" in outcome.unusable["fat"]
    limited = [[sample(t, 0, memory=900, limit=1000) for t in range(88, 101, 2)]]
    assert decide(spec, 1, {"web": limited}, 100.0, None, 2.0).decision.reason == "fat: memory 90% > 50% for 10s"


def test_reason_wording():
    trigger = MetricTriggerSpec(name="highcpu", metric="cpu", operator=">", value=80.0, time=120.0)
    assert reason(trigger, 93.2) == "highcpu: cpu 93% > 80% for 2m"


# ---- the manual scale and the manifest's scale ----------------------------------------------------------


async def test_manual_scale_keeps_to_the_range_while_autoscale_scales(core):
    await core.settle(await core.control.projects.add(ROOT, "p", PLAIN))
    await core.settle(await core.control.services.scale(ROOT, "p", "web", "3"))
    with pytest.raises(Conflict) as info:
        await core.control.services.scale(ROOT, "p", "web", "+1")
    assert info.value.message == ("web autoscales between 1 and 3 (autoscale.min/max); scale within that range or "
                                  "set autoscale.enable: false")
    with pytest.raises(Conflict):
        await core.control.services.scale(ROOT, "p", "web", "0")
    await core.settle(await core.control.services.scale(ROOT, "p", "db", "4"))  # not autoscaled
    # notify only announces: the operator's scale is the operator's
    await core.settle(await core.control.projects.update(ROOT, "p", PLAIN.replace("enable: true", "enable: notify")))
    await core.settle(await core.control.services.scale(ROOT, "p", "web", "7"))
    # a range that leaves the scale outside moves it to the nearest bound
    result = await core.control.projects.update(ROOT, "p", PLAIN)
    await core.settle(result)
    assert (await core.control.services.get(ROOT, "p", "web"))["scale"] == 3
    # a version that sets scale: inside its range sets it, whatever the scale was
    await core.settle(await core.control.projects.update(ROOT, "p", PLAIN.replace("enable: true", "enable: notify")))
    await core.settle(await core.control.services.scale(ROOT, "p", "web", "7"))
    with_scale = PLAIN.replace("    command: sh", "    scale: 2\n    command: sh")
    await core.settle(await core.control.projects.update(ROOT, "p", with_scale))
    assert (await core.control.services.get(ROOT, "p", "web"))["scale"] == 2
    # and a later version that keeps scale: 2 keeps what the autoscaler (here: an operator) set since
    await core.settle(await core.control.services.scale(ROOT, "p", "web", "3"))
    await core.settle(await core.control.projects.update(ROOT, "p", with_scale.replace("retrigger_delay: 20s",
                                                                                        "retrigger_delay: 30s")))
    assert (await core.control.services.get(ROOT, "p", "web"))["scale"] == 3


# ---- the loop, end to end on the fake driver ------------------------------------------------------


@pytest.fixture
async def timed_core(tmp_path, nursery, mock_clock):
    """``core`` with the store on the context's clock, as the daemon has it: retrigger_delay
    compares the store's stamp of the last scale with the samples' times."""
    yield await start_core(tmp_path, nursery, mock_clock, TrioClock())
    nursery.cancel_scope.cancel()


async def collect(core, history: MetricsHistory) -> None:
    """The daemon's collector (mariposa/metrics/collector.py) at the history's interval."""
    await Collector(core.ctx, history.interval).run()


def web_ids(core) -> list[str]:
    return [i.id for i in core.driver.instances.values() if i.service == "web" and i.running]


async def test_burners_scale_up_to_max_then_down_to_min(timed_core, nursery, mock_clock):
    core = timed_core
    history = core.ctx.metrics = MetricsHistory(2.0)
    await core.settle(await core.control.projects.add(ROOT, "p", PLAIN))
    nursery.start_soon(collect, core, history)
    scaler = Autoscaler(core.ctx)
    await nursery.start(scaler.run)
    for i in web_ids(core):
        core.driver.set_load(i, cores=1.0)
    seen = []
    with trio.fail_after(600):
        while len(seen) < 2 or len(web_ids(core)) != 3:
            for i in web_ids(core):
                core.driver.set_load(i, cores=1.0)  # every new instance burns too
            tasks = [t for t in await core.control.queue.list(ROOT, "p") if t["author"] == "autoscale"]
            seen = sorted(t["params"]["to"] for t in tasks)
            await trio.sleep(1)
    await trio.sleep(120)  # burning on at max: never a fourth
    tasks = [t for t in await core.control.queue.list(ROOT, "p") if t["author"] == "autoscale"]
    assert sorted(t["params"]["to"] for t in tasks) == [2, 3]
    assert all(t["params"]["reason"].startswith("highcpu: cpu 100% > 50% for 20s") for t in tasks)
    scales = await core.control.events.list(ROOT, "p", types=("autoscale",))
    assert [e["message"] for e in scales] == ["web 1 -> 2: highcpu: cpu 100% > 50% for 20s",
                                              "web 2 -> 3: highcpu: cpu 100% > 50% for 20s"]
    assert all(e["author"] == "autoscale" for e in scales)
    first, second = (e["time"] for e in scales)
    assert second - first >= 20  # retrigger_delay
    for i in web_ids(core):
        core.driver.set_load(i, cores=0.0)
    with trio.fail_after(600):
        while len(web_ids(core)) != 1:
            await trio.sleep(1)
    downs = [t for t in await core.control.queue.list(ROOT, "p") if t["params"].get("reason", "").startswith("idle")]
    assert sorted(t["params"]["to"] for t in downs) == [1, 2]


async def test_notify_announces_and_scales_nothing(timed_core, nursery, mock_clock):
    core = timed_core
    history = core.ctx.metrics = MetricsHistory(2.0)
    await core.settle(await core.control.projects.add(ROOT, "p", PLAIN.replace("enable: true", "enable: notify")))
    nursery.start_soon(collect, core, history)
    await nursery.start(Autoscaler(core.ctx).run)
    for i in web_ids(core):
        core.driver.set_load(i, cores=1.0)
    await trio.sleep(70)
    notes = await core.control.events.list(ROOT, "p", types=("autoscale",))
    assert notes and all(e["type"] == "autoscale.notify" for e in notes)
    assert notes[0]["message"] == ("web 1 -> 2 (not scaled: autoscale.enable is notify): highcpu: cpu 100% > 50% "
                                   "for 20s")
    assert len(notes) <= 3  # once per retrigger_delay, not every round
    assert len(web_ids(core)) == 1


async def test_a_trigger_that_cannot_apply_says_so_once(timed_core, nursery, mock_clock):
    core = timed_core
    history = core.ctx.metrics = MetricsHistory(2.0)
    text = PLAIN.replace("metric: cpu\n", "metric: memory\n")
    await core.settle(await core.control.projects.add(ROOT, "p", text))
    for i in web_ids(core):
        core.driver._box_of(i).memory_limit = None  # a runtime that cannot tell the limit
    nursery.start_soon(collect, core, history)
    await nursery.start(Autoscaler(core.ctx).run)
    await trio.sleep(60)
    said = await core.control.events.list(ROOT, "p", types=("trigger.unusable",))
    assert [e["message"] for e in said] == [
        "trigger 'highcpu' of web cannot apply: its instances have no memory limit to be a percentage of"]
    assert await core.control.events.list(ROOT, "p", types=("autoscale",)) == []
