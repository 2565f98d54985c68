"""Hypothesis properties of the section editor behind `service add|update|delete`: on manifests
written in any of the usual indentation styles, with a comment heading each service and one at
the end of its image line,

* the text comes back byte for byte when nothing is changed;
* putting a section (from a file in another style and any of its three forms) gives exactly the
  data expected, the section in place of the old one or after the last, and every other
  service's comments;
* dropping a service gives the data without it, every other service's comments, and not its own.
"""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from mariposa.manifest.sections import Editor

names = st.text("abcdefghij", min_size=1, max_size=6)
words = st.text("abcdefghijklmnopqrstuvwxyz -_:#'\"", min_size=1, max_size=12).filter(str.strip)
leaves = st.one_of(st.integers(-5, 5000), words, st.sampled_from(["line one\nline two\n", "a\n\n  b\n", "yes", ""]))
maps = st.recursive(st.dictionaries(names, leaves, min_size=1, max_size=3), lambda inner: st.dictionaries(
    names, st.one_of(leaves, inner, st.lists(st.one_of(leaves, inner), min_size=1, max_size=3)),
    min_size=1, max_size=3), max_leaves=6)
values = st.one_of(leaves, maps, st.lists(st.one_of(leaves, maps), min_size=1, max_size=3))  # as manifests nest
sections = st.dictionaries(st.sampled_from(["command", "environment", "ports", "tags", "stop"]), values,
                           max_size=4).map(lambda d: {"image": "busybox", **d})
styles = st.sampled_from([(2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (3, 3, 0)])


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _dump(data, style) -> str:
    y = YAML()
    y.indent(mapping=style[0], sequence=style[1], offset=style[2])
    y.width = 4096
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def _load(text: str):
    return _plain(YAML(typ="safe", pure=True).load(text))


def manifest_text(services: dict, style) -> str:
    doc = CommentedMap(services=CommentedMap())
    for name, section in services.items():
        body = CommentedMap(section)
        body.yaml_add_eol_comment(f"# eol-{name}.", "image")
        doc["services"][name] = body
        doc["services"].yaml_set_comment_before_after_key(name, before=f"head-of-{name}.", indent=style[0])
    return _dump(doc, style)


def section_text(name: str, section: dict, style, form: str) -> str:
    data = {"bare": section, "named": {name: section}, "services": {"services": {name: section}}}[form]
    return "# the file's own comment\n" + _dump(data, style)


manifests = st.tuples(st.dictionaries(names, sections, min_size=1, max_size=3), styles)


@settings(max_examples=40, deadline=None)
@given(manifests)
def test_an_unchanged_manifest_comes_back_byte_for_byte(manifest):
    text = manifest_text(*manifest)
    assert Editor(text).text() == text


@settings(max_examples=40, deadline=None)
@given(manifests, st.one_of(names, st.just("")), sections, styles, st.sampled_from(["bare", "named", "services"]))
def test_put_gives_the_expected_data_and_keeps_every_other_comment(manifest, name, section, style, form):
    services, manifest_style = manifest
    name = name or next(iter(services))  # "" picks an existing service: a replacement
    editor = Editor(manifest_text(services, manifest_style))
    editor.put(name, editor.section_of(section_text(name, section, style, form), name))
    text = editor.text()
    expected = {**services, name: section}  # a dict keeps a replaced key's place, and adds after the last
    assert _load(text) == _plain({"services": expected})
    assert list(_load(text)["services"]) == list(expected)
    for other in services:
        assert f"head-of-{other}." in text
        if other != name:
            assert f"# eol-{other}." in text
    assert Editor(text).text() == text  # and the result is as stable as any manifest


@settings(max_examples=40, deadline=None)
@given(manifests, st.data())
def test_drop_gives_the_data_without_the_service_and_keeps_every_other_comment(manifest, data):
    services, style = manifest
    name = data.draw(st.sampled_from(sorted(services)))
    editor = Editor(manifest_text(services, style))
    editor.drop(name)
    if len(services) == 1:
        return  # a project keeps one service at least: the control layer refuses this
    text = editor.text()
    assert _load(text) == _plain({"services": {k: v for k, v in services.items() if k != name}})
    for other in services:
        present = other != name
        assert (f"head-of-{other}." in text, f"# eol-{other}." in text) == (present, present), text
