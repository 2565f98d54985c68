"""The exports' YAML writer (mariposa/export/render.py): any plain data it is given reads back as
the same data, through a YAML 1.1 reader (PyYAML, as docker-compose reads) and a 1.2 one
(ruamel, as the manifest parser reads)."""

from __future__ import annotations

import io

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from mariposa.export.render import yaml_documents, yaml_text

tricky = st.sampled_from(["no", "Yes", "on", "~", "null", "1:30", "0x1F", "017", "1e3", ".5", "- x", "a: b",
                          "a #b", "#x", "x:", "'q'", '"q"', "{a}", "[a]", "*a", "&a", "!t", "|", ">", "%x", "@x",
                          "`x", " lead", "trail ", "", "2001-12-14", "+1", "-", "?", "a\nb", "\t", "é", "🦋",
                          "\x85", "\u2028", "\ufeff", "$$(x)", "${X}", "on-failure:5", "80/tcp", "=", ".inf"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False,
                    allow_infinity=False), st.text(max_size=20), tricky)
data = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(min_size=1, max_size=10), tricky), inner,
                                                 max_size=4)), max_leaves=20)
documents = st.one_of(st.dictionaries(st.one_of(st.text(min_size=1, max_size=10), tricky), data, max_size=5),
                      st.lists(data, max_size=5))


def ruamel_all(text: str) -> list:
    return list(YAML(typ="safe", pure=True).load_all(io.StringIO(text)))


@settings(max_examples=200, deadline=None)
@given(documents)
def test_any_data_reads_back_the_same(doc):
    text = yaml_text(doc)
    assert yaml.safe_load(text) == doc, text
    assert YAML(typ="safe", pure=True).load(text) == doc, text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=5), data, min_size=1, max_size=3), min_size=1,
                max_size=4))
def test_documents_read_back_the_same(docs):
    text = yaml_documents(docs)
    assert list(yaml.safe_load_all(text)) == docs, text
    assert ruamel_all(text) == docs, text
