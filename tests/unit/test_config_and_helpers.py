"""Pure pieces of issues 4-6: configuration loading, watched-file names and reprovision's
selection order (the back-off numbers are in test_backoff.py)."""

from __future__ import annotations

import pytest

from mariposa.config import ConfigError, load
from mariposa.converge.apply import select_for_reprovision
from mariposa.model import Instance, RestartPolicy, ServiceGoal, ServiceSpec
from mariposa.watch import project_name


def test_config_defaults_file_and_flag_overrides(tmp_path):
    assert load(str(_write(tmp_path, ""))).socket_mode == 0o660
    cfg = load(str(_write(tmp_path, 'socket_mode = "0600"\nresync = 3\n[packages.tiny]\nmemory = "64m"\ncpus = 0.25\n')),
               {"resync": 7.0, "manifest_dir": ""})
    assert cfg.socket_mode == 0o600 and cfg.resync == 7.0 and cfg.manifest_dir is None
    assert cfg.packages["tiny"].memory == 64 * 1024 * 1024 and "small" not in cfg.packages


@pytest.mark.parametrize(("text", "expected"), [
    ("statedir = '/x'\n", ":1: statedir: unknown key; did you mean 'state_dir'?"),
    ("log_format = 'xml'\n", ":1: log_format: expected one of auto, json, console"),
    ("\n\nparallelism = 0\n", ":3: parallelism: must be above 0"),
    ("resync = 'soon'\n", ":1: resync: expected a number or string, got str"),
    ("[packages.x]\ncpus = 1\n", "packages.x: a package needs 'memory'"),
    ("socket_mode = 'rw'\n", "socket_mode: expected an octal mode"),
    ("state_dir = \n", "Invalid value"),
])
def test_config_errors_name_the_file_line_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in info.value.message and expected in info.value.message


def _write(tmp_path, text):
    path = tmp_path / "mariposa.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "project"), [
    ("shop.yaml", "shop"), ("shop.yml", "shop"), ("my-app_2.yaml", "my-app_2"),
    (".shop.yaml", None), ("shop.yaml~", None), (".shop.yaml.swp", None), ("shop.yaml.tmp", None),
    ("#shop.yaml#", None), ("Shop.yaml", None), ("shop.json", None), ("shop.meta.yaml", None), ("4913", None),
])
def test_which_files_are_projects(name, project):
    assert project_name(name) == project


@pytest.mark.parametrize(("policy", "code", "restarts", "allowed"), [
    ("always", 0, 99, True), ("unless-stopped", 1, 5, True), ("no", 1, 0, False),
    ("on-failure", 0, 0, False), ("on-failure", 1, 50, True), ("on-failure:3", 1, 2, True),
    ("on-failure:3", 1, 3, False), ("on-failure:3", None, 0, True),
])
def test_restart_policy_decisions(policy, code, restarts, allowed):
    assert RestartPolicy.parse(policy).allows(code, restarts) is allowed


def _inst(n: int, spec: ServiceSpec, created: float, state: str = "running", version: str = "v") -> Instance:
    return Instance(id=f"i{n}", runtime_id=f"r{n}", name=f"n{n}", project_id="p", service="web",
                    spec_hash=spec.spec_hash, version_id=version, state=state, created=created, image=spec.image,
                    compute_type="docker")


def test_reprovision_selects_older_versions_first_then_oldest():
    old, new = ServiceSpec(name="web", image="a:1"), ServiceSpec(name="web", image="a:2")
    goal = ServiceGoal(project_id="p", project_name="p", version_id="v2", spec=new, scale=5)
    actual = [_inst(1, new, 1.0, version="v2"), _inst(2, old, 5.0), _inst(3, old, 2.0), _inst(4, new, 0.5, version="v2"),
              _inst(5, old, 3.0, state="exited")]
    assert select_for_reprovision(actual, goal, {"explicit": True}) == ["i3", "i2"]  # the rest: old, oldest first
    assert select_for_reprovision(actual, goal, {"count": 1}) == ["i3"]
    assert select_for_reprovision(actual, goal, {"explicit": True, "version": "v2"}) == ["i4", "i1"]
    assert select_for_reprovision(actual, goal, {"explicit": True, "instance": "i2"}) == ["i2"]
    everything_current = [i for i in actual if i.spec_hash == new.spec_hash]
    assert select_for_reprovision(everything_current, goal, {"explicit": True}) == ["i4", "i1"]


def test_manifest_problems_quote_only_a_short_excerpt():
    from mariposa.manifest import ManifestError, parse_manifest

    secret = "root:$6$" + "x" * 500 + ":19000:0:99999:7:::"
    try:
        parse_manifest(f"services: {{}}\n'{secret}': 1\n", "f.yaml")
    except ManifestError as exc:
        [problem] = [p for p in exc.problems if p.line == 2]
        assert len(problem.message) <= 200 and len(problem.field) <= 80 and secret not in str(exc)
    else:
        raise AssertionError("an unknown top-level key must be refused")


@pytest.mark.parametrize("text,where", [
    ("services:\n  web:\n    image: x\n    restart: on-failure:\u00b2\n", (4, 14)),
    ("services:\n  web:\n    image: x\n    ports: ['" + "9" * 4301 + ":80']\n", (4, 13)),
])
def test_odd_digits_are_manifest_problems_with_a_position(text, where):
    from mariposa.manifest import ManifestError, parse_manifest

    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "m.yaml")
    assert [(p.line, p.column) for p in info.value.problems] == [where]


def test_failure_streaks_are_kept_per_service_whatever_else_finishes(tmp_path):
    from mariposa.store import tasks as task_store
    from mariposa.store.db import Store

    store = Store(tmp_path / "m.db")

    def finish(db, service: str, state: str, ended: float) -> None:
        task = task_store.enqueue(db, project_id="p", project_name="p", service=service, kind="converge")
        task_store.finish(db, task.id, state, None)
        db.execute("UPDATE tasks SET ended = ? WHERE id = ?", [ended, task.id])

    def history(db) -> None:
        finish(db, "broken", "completed", 1.0)
        for n in range(3):
            finish(db, "broken", "failed", 2.0 + n)
        for n in range(1500):  # a busy host: many other services finish tasks meanwhile
            finish(db, f"svc{n % 50}", "completed", 10.0 + n)
        finish(db, "mended", "failed", 5.0)
        finish(db, "mended", "completed", 6.0)

    store.call_sync(history)
    streaks = store.call_sync(task_store.failure_streaks)
    assert streaks == {("p", "broken"): (3, 4.0)}
    store.close()


LAUGHS = ("l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
          + "s: *l8\ns: 1\n")


@pytest.mark.parametrize("text,where,message", [
    (LAUGHS, (6, 5), "aliases expand this to more than 100,000 values"),
    ("services: " + "[" * 300 + "]" * 300 + "\n", (1, 74), "nest more than 64 deep"),
    ("".join("  " * i + f"k{i}:\n" for i in range(200)), (65, 129), "nest more than 64 deep"),
    ("#" + "x" * 1_000_000 + "\n", (1, 16385), "1,000,001 characters long"),
    ("# x\n" * 300_000, (1, 1), "the manifest is 1171 KiB; at most 1024 KiB"),
    ("services:\n" + "".join(f"  s{i}:\n    image: busybox\n" for i in range(1001)), (2, 3),
     "lists 1,001 services; a project has at most 1,000"),
])
def test_manifests_past_the_bounds_are_refused_at_a_position(text, where, message):
    from mariposa.manifest import ManifestError, parse_manifest

    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "m.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.column) == where and message in problem.message


BASE = "services:\n  web:\n    image: busybox\n"


@pytest.mark.parametrize("extra,where,message", [
    ("    scale: 0x" + "f" * 4000 + "\n", (4, 12), "got a number of 16,000 bits"),
    ("    min_healthy_time: -1" + "0" * 309 + "\n", (4, 23), "must be a finite number of seconds"),
    ("    min_healthy_time: .nan\n", (4, 23), "got nan"),
    ("    progress_deadline: .inf\n", (4, 24), "got inf"),
    ("    healthchecks:\n      - type: http\n        status: 0x" + "f" * 4000 + "\n", (6, 17), "status range a number of 16,000 bits-a number of 16,000 bits is not within 100-599"),
    ("    <<: {a: 1}\n    <<: {b: 2}\n", (5, 5), "duplicate merge key"),
])
def test_numbers_and_keys_python_chokes_on_are_manifest_problems(extra, where, message):
    from mariposa.manifest import ManifestError, parse_manifest

    with pytest.raises(ManifestError) as info:
        parse_manifest(BASE + extra, "m.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.column) == where and message in problem.message
