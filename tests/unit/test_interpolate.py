"""The template grammar ({{ .a.b }}, {{{{ escapes), its variables, and where templates may be."""

from __future__ import annotations

import pytest

from mariposa.converge.render import render_checks, render_spec
from mariposa.errors import TaskFailed
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.interpolate import TemplateError, Var, check_variable, parse, render, variables
from mariposa.manifest.shapes import split_templated


@pytest.mark.parametrize("text,parts", [
    ("plain", ("plain",)),
    ("", ("",)),
    ("{{ .meta.a }}", (Var(("meta", "a"), 0),)),
    ("{{.meta.a}}", (Var(("meta", "a"), 0),)),
    ("x{{  .project.name\t}}y", ("x", Var(("project", "name"), 1), "y")),
    ("{{{{ .meta.a }}", ("{{ .meta.a }}",)),
    ("{{{{{{.meta.b}}", ("{{", Var(("meta", "b"), 4))),
    ("a }} b", ("a }} b",)),
    ("{{ .scale }}/{{ .meta.k-1 }}", (Var(("scale",), 0), "/", Var(("meta", "k-1"), 13))),
])
def test_parse(text, parts):
    assert parse(text) == parts


@pytest.mark.parametrize("text,offset,says", [
    ("a {{ .meta.x", 2, "not closed"),
    ("{{ meta.x }}", 0, "not a variable"),
    ("x{{ .meta.x | upper }}", 1, "no other expressions"),
    ("{{ .meta.x }} {{ }}", 14, "not a variable"),
    ("{{ .meta..x }}", 0, "not a variable"),
    ("{{ printf \"%s\" .meta.x }}", 0, "not a variable"),
    ("{{{ .meta.x }}", 0, "not a variable"),
])
def test_syntax_errors_say_where(text, offset, says):
    with pytest.raises(TemplateError, match=says) as info:
        parse(text)
    assert info.value.offset == offset


@pytest.mark.parametrize("path,ok", [
    (("meta", "k"), True), (("meta",), False), (("meta", "a", "b"), False),
    (("project", "name"), True), (("project", "uuid"), True), (("project", "version"), True),
    (("project", "owner"), False), (("project",), False),
    (("service", "version"), True), (("package", "ram"), True), (("package", "family"), True),
    (("scale",), True), (("scale", "x"), False),
    (("placement", "instance", "uuid"), True), (("placement", "cn", "uuid"), True), (("placement", "cn"), False),
    (("placement", "rack", "uuid"), False),
    (("cns", "svc", "private"), True), (("cns", "inst", "private"), True), (("cns", "svc", "public"), False),
    (("nope",), False),
])
def test_variables_known(path, ok):
    assert (check_variable(Var(path, 0)) is None) == ok


SECRET_ENV = "services:\n  web:\n    image: x\n    {extra}environment:\n      DB: 'pw={{{{ .secret.db }}}}'\n"


def test_a_secret_is_allowed_in_environment_only_with_secret_env():
    assert check_variable(variables("{{ .secret.db }}")[0]) is None
    svc = parse_manifest(SECRET_ENV.format(extra="secret_env: true\n    "), "m.yaml", secrets=frozenset({"db"}),
                         meta={}).services[0]
    assert svc.environment == (("DB", "pw={{ .secret.db }}"),) and svc.meta_keys == ()  # never the value
    assert dict(render_spec(svc, {}, {}, {"db": "s3cr3t"}).environment) == {"DB": "pw=s3cr3t"}
    with pytest.raises(TaskFailed, match=r"\.secret\.db") as info:
        render_spec(svc, {}, {}, {})
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ManifestError, match="needs 'secret_env: true'") as refused:
        parse_manifest(SECRET_ENV.format(extra=""), "m.yaml")
    assert refused.value.problems[0].line == 5
    with pytest.raises(ManifestError, match="unknown secret 'db'"):
        parse_manifest(SECRET_ENV.format(extra="secret_env: true\n    "), "m.yaml", secrets=frozenset())
    for elsewhere in ("command: echo {{ .secret.db }}", "labels: {a: '{{ .secret.db }}'}",
                      "healthchecks: [{type: command, command: 'x {{ .secret.db }}'}]"):
        with pytest.raises(ManifestError, match="a secret may appear only in environment"):
            parse_manifest(f"services:\n  web:\n    image: x\n    secret_env: true\n    {elsewhere}\n", "m.yaml")


def test_render_never_gives_an_empty_string_for_a_missing_key():
    assert render("a={{ .meta.a }} {{{{x", lambda p: {"meta": "1"}.get(p[0])) == "a=1 {{x"
    with pytest.raises(KeyError):
        render("{{ .meta.a }}", lambda p: None)


def test_split_keeps_a_template_in_one_word():
    words = split_templated("sh -c 'echo {{ .meta.a }}' {{ .meta.b }}")
    assert words == ["sh", "-c", "echo {{ .meta.a }}", "{{ .meta.b }}"]
    assert split_templated("a b") == ["a", "b"]


MANIFEST = """\
services:
  web:
    image: busybox
    command: sh -c "echo {{ .meta.greeting }}; sleep 1d"
    environment:
      GREETING: "{{ .meta.greeting }}"
      WHO: "{{ .placement.instance.name }}@{{ .cns.svc.private }}/{{ .scale }}"
    labels:
      team: "{{ .meta.team }}"
    healthchecks:
      - type: http
        port: 80
        path: "/{{ .meta.probe }}"
"""
META = {"greeting": "hi", "team": "core", "probe": "ping"}


def test_fixed_fields_note_their_meta_keys_and_checks_do_not():
    svc = parse_manifest(MANIFEST, "m.yaml", meta=META).services[0]
    assert svc.meta_keys == ("greeting", "team")
    assert svc.environment[0] == ("GREETING", "{{ .meta.greeting }}")  # stored as written


def test_undefined_key_is_refused_with_its_position_and_name():
    with pytest.raises(ManifestError) as info:
        parse_manifest(MANIFEST, "m.yaml", meta={"greeting": "hi", "probe": "x"})
    [found] = info.value.problems
    assert (found.line, found.column, found.field) == (9, 13, "services.web.labels.team")
    assert "undefined variable .meta.team" in found.message


@pytest.mark.parametrize("option", [
    "image: '{{ .meta.img }}'",
    "working_dir: '/{{ .meta.d }}'",
    "ports: ['{{ .meta.p }}']",
    "healthchecks: [{type: http, port: 80, body: '{{ .meta.b }}'}]",
    "volumes: ['/srv/{{ .meta.v }}:/data']",
])
def test_templates_elsewhere_are_refused_where_written(option):
    with pytest.raises(ManifestError) as info:
        parse_manifest(f"services:\n  web:\n    image: busybox\n    {option}\n".replace(
            "image: busybox\n    image:", "image:"), "m.yaml", meta={})
    assert any("only allowed in environment" in p.message and p.line >= 3 for p in info.value.problems)


def test_bad_template_syntax_in_an_allowed_field_is_refused():
    with pytest.raises(ManifestError, match="not closed"):
        parse_manifest("services:\n  web:\n    image: x\n    environment: {A: 'x {{ .meta.a'}\n", "m.yaml")


def test_on_meta_change_choices():
    svc = parse_manifest("services:\n  web:\n    image: x\n    on_meta_change: none\n", "m.yaml").services[0]
    assert svc.on_meta_change == "none"
    with pytest.raises(ManifestError, match="unknown on_meta_change 'later'"):
        parse_manifest("services:\n  web:\n    image: x\n    on_meta_change: later\n", "m.yaml")


def test_render_spec_and_checks():
    svc = parse_manifest(MANIFEST, "m.yaml", meta=META).services[0]
    values = {"placement.instance.name": "p-web-1", "cns.svc.private": "web", "scale": "3"}
    out = render_spec(svc, values, META)
    assert dict(out.environment) == {"GREETING": "hi", "WHO": "p-web-1@web/3"}
    assert out.command == ("sh", "-c", "echo hi; sleep 1d") and dict(out.tags) == {"team": "core"}
    with pytest.raises(TaskFailed, match="meta.greeting"):
        render_spec(svc, values, {"team": "x"})
    assert render_checks(svc.healthchecks, values, META)[0].path == "/ping"
    assert render_checks(svc.healthchecks, values, {}) is None


def test_env_file_text_is_literal():
    text = "services:\n  web:\n    image: x\n    env_file: a.env\n"
    svc = parse_manifest(text, "m.yaml", env_files={"a.env": "A=x{{ .meta.q }}\n"}, meta={}).services[0]
    assert dict(render_spec(svc, {}, {}).environment)["A"] == "x{{ .meta.q }}"
    assert svc.meta_keys == ()
