"""How a manifest's text is read: libyaml first, ruamel's YAML 1.2 scanner for what libyaml
refuses, and the bounds that keep either inside the second a manifest may cost."""

from __future__ import annotations

import pytest

from mariposa.manifest import ManifestError, fallback, limits, parse, parse_manifest


def services(n: int, body: str) -> str:
    return "services:\n" + "".join(f"  web{i}:\n    image: x\n{body}" for i in range(n))


def test_a_colon_inside_a_flow_collection_is_a_value_as_yaml_1_2_says():
    # libyaml calls "[8080:80]" a syntax error; ruamel's own scanner reads what libyaml refuses.
    spec = parse_manifest(services(1, "    ports: [8080:80]\n    volumes: [data:/d]\n"))
    assert (spec.services[0].ports[0].host, spec.services[0].ports[0].container) == (8080, 80)
    assert spec.services[0].volumes[0].source == "data"


def test_the_yaml_directive_decides_how_scalars_read():
    # YAML 1.1 reads 010 as octal and "yes" as a boolean; 1.2 (the default) does not.
    assert parse.load("%YAML 1.1\n---\na: 010\nb: yes\n", "m.yaml") == {"a": 8, "b": True}
    assert parse.load("a: 010\nb: yes\n", "m.yaml") == {"a": 10, "b": "yes"}


def test_a_text_libyaml_refuses_and_ruamel_cannot_read_in_time_keeps_libyaml_s_position(monkeypatch):
    monkeypatch.setattr(fallback, "BUDGET", 0.0)
    monkeypatch.setattr(fallback.Pure.__init__, "__defaults__", (0.0,))
    with pytest.raises(ManifestError) as caught:
        parse_manifest(services(3, "    ports: [8080:80]\n"))
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (4, 17)
    assert "needs quotes around a value with ':' inside [ ] or { }" in problem.message


def test_a_real_syntax_error_is_ruamel_s_message_at_ruamel_s_position():
    with pytest.raises(ManifestError) as caught:
        parse_manifest("services:\n  web:\n    image: [nginx\n    scale: 2\n")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (4, 10)
    assert "needs quotes" not in problem.message


def test_written_values_are_bounded_before_composing():
    text = "services:\n  web:\n    image: x\n    command:\n" + "    - x\n" * limits.MAX_VALUES
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    (problem,) = caught.value.problems
    assert problem.message == f"the manifest writes more than {limits.MAX_VALUES:,} values"
    # Nine values come before the list's items (mappings and the list itself count), which start
    # on line 5: the one past the bound is item MAX_VALUES + 1 - 9.
    assert (problem.line, problem.column) == (5 + limits.MAX_VALUES + 1 - 9 - 1, 7)


def test_balanced_deep_nesting_never_reaches_the_recursive_composer():
    # libyaml's composer recurses in C: 100,000 balanced brackets crashed the process.
    deep = "services: " + "[\n" * 10_000 + "]\n" * 10_000
    with pytest.raises(ManifestError, match="collections nest more than 64 deep"):
        parse_manifest(deep)
