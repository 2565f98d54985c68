"""`env_file:` (issue 12): compose's file format, read by the caller beside the manifest and
stored in the version, so a version is parsed the same way for ever; `environment` overrides."""

from __future__ import annotations

import pytest

from mariposa.errors import BadRequest
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.env_files import parse, read_beside, referenced
from mariposa.store import goal as goal_store
from tests.unit.conftest import ROOT, Core

DOTENV = """\
# comment
export MODE=production
PLAIN=a b   # trailing comment
QUOTED="line\\none \\"two\\""
SINGLE='$HOME \\n stays'
EMPTY=
"""


def test_compose_s_env_file_format():
    assert [(n, k, v) for n, k, v, _ in parse(DOTENV)] == [
        (2, "MODE", "production"), (3, "PLAIN", "a b"), (4, "QUOTED", 'line\none "two"'),
        (5, "SINGLE", "$HOME \\n stays"), (6, "EMPTY", ""),
    ]
    problems = [(n, p) for n, _, _, p in parse("OK=1\nNOVALUE\n1BAD=x\nOPEN=\"x\n") if p]
    assert problems == [
        (2, "'NOVALUE' has no '=' (a value from the caller's environment is not taken)"),
        (3, "invalid variable name '1BAD'"),
        (4, 'OPEN: the " quote is not closed on this line'),
    ]


MANIFEST = """\
services:
  web:
    image: busybox
    env_file: [common.env, web.env]
    environment:
      MODE: staging
  worker:
    image: busybox
    env_file:
      - path: common.env
      - path: optional.env
        required: false
"""


def test_env_files_fill_the_environment_and_environment_overrides():
    files = {"common.env": "MODE=production\nSHARED=1\n", "web.env": "SHARED=2\nPORT=80\n",
             "optional.env": {"error": "No such file or directory"}}
    spec = parse_manifest(MANIFEST, "m.yaml", env_files=files)
    assert dict(spec.service("web").environment) == {"MODE": "staging", "SHARED": "2", "PORT": "80"}
    assert dict(spec.service("worker").environment) == {"MODE": "production", "SHARED": "1"}
    assert referenced(MANIFEST) == ["common.env", "web.env", "optional.env"]


@pytest.mark.parametrize(("files", "where", "message"), [
    ({"web.env": "A=1", "common.env": {"error": "No such file or directory"}}, (4, 16),
     "cannot read env_file 'common.env': No such file or directory"),
    ({"common.env": "A=1", "web.env": "A=1\nB\n"}, (4, 28),
     "env_file 'web.env' line 2: 'B' has no '='"),
    ({"common.env": "A=1"}, (4, 28), "env_file 'web.env' was not read"),
])
def test_env_file_problems_point_at_the_entry(files, where, message):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(MANIFEST, "m.yaml", env_files={"optional.env": "X=1", **files})
    p = caught.value.problems[0]  # (the worker names common.env too)
    assert (p.line, p.column) == where and message in p.message, p


def test_read_beside_reads_relative_to_the_manifest(tmp_path):
    (tmp_path / "common.env").write_text("A=1\n")
    found = read_beside(MANIFEST, tmp_path)
    assert found["common.env"] == "A=1\n"
    assert found["web.env"] == {"error": "No such file or directory"}


ONE = "services:\n  web:\n    image: busybox\n    command: sleep 1000\n    env_file: app.env\n"


async def current_spec(core: Core):
    version = await core.ctx.store.call(lambda db: goal_store.current_version(db, goal_store.get_project(db, "p")))
    return await core.ctx.goals.spec_of(version)


async def test_a_version_keeps_its_env_file_and_hides_its_values(core: Core):
    result = await core.control.projects.add(ROOT, "p", ONE, "m.yaml",
                                             env_files={"app.env": "TOKEN=s3cret\n", "unused.env": "X=1"})
    await core.settle(result)
    (version,) = await core.control.projects.versions(ROOT, "p")
    assert version["env_files"] == ["app.env"]  # names only; what was not named is not kept
    got = await core.control.services.get(ROOT, "p", "web")
    assert got["spec"]["environment"] == [["TOKEN", "<redacted>"]] and "s3cret" not in repr(got)
    project = await core.control.projects.get(ROOT, "p")
    assert "s3cret" not in repr(project)

    core.ctx.goals._specs.clear()  # read back from the store, as after a restart
    spec = await current_spec(core)
    assert dict(spec.service("web").environment) == {"TOKEN": "s3cret"}

    same = await core.control.projects.update(ROOT, "p", ONE, "m.yaml", env_files={"app.env": "TOKEN=s3cret\n"})
    assert not same["changed"]
    changed = await core.control.projects.update(ROOT, "p", ONE, "m.yaml", env_files={"app.env": "TOKEN=new\n"})
    assert changed["changed"]  # the same text with another env file is a new version
    await core.settle(changed)
    await core.settle(await core.control.projects.revert(ROOT, "p", "1"))
    spec = await current_spec(core)
    assert dict(spec.service("web").environment) == {"TOKEN": "s3cret"}  # the old file's text came back


async def test_env_files_of_the_wrong_shape_are_a_bad_request(core: Core):
    for bad in (["a"], {"a": 1}, {"a": {"oops": "x"}}):
        with pytest.raises(BadRequest):
            await core.control.projects.add(ROOT, "p", ONE, env_files=bad)
