"""Hypothesis properties of the compose importer: for any compose file built from the fields of
the table with values of any shape,

* it converts, or it is refused with problems that each carry a line and a column (never an
  exception of another kind);
* every key path of the file is in the report, and a converted manifest dumps to YAML that
  reads back as the same data.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from mariposa.compose import convert
from mariposa.compose.fields import SERVICE_FIELDS
from mariposa.manifest import ManifestError
from tests.composepaths import unreported

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.sampled_from([
    "x", "", "80", "8080:80", "127.0.0.1:53:53/udp", "3000-3002", "1m30s", "500ms", "bogus", "./a:/b:ro",
    "data:/d", "/anon", "$$HOME", "${V:-d}", "host:1.2.3.4", "CMD", "always", "on-failure", "service_healthy",
    "host", "global", "if_not_present", "A=1"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["test", "interval", "condition", "replicas", "limits", "memory", "target",
                                     "published", "type", "source", "x-a", "a"]), inner, max_size=3)),
    max_leaves=8)
services = st.dictionaries(st.sampled_from(sorted(SERVICE_FIELDS) + ["x-meta", "bogus"]), values, max_size=6)
files = st.fixed_dictionaries(
    {"services": st.dictionaries(st.sampled_from(["web", "db", "my_worker"]), services, min_size=1, max_size=3)},
    optional={"version": st.sampled_from(["2.4", "3.8", 3]), "volumes": values, "networks": values,
              "x-common": values, "secrets": values})


@settings(max_examples=200, deadline=None)
@given(files)
def test_any_compose_file_converts_or_is_refused_with_positions(doc):
    text = json.dumps(doc)
    try:
        conversion = convert(text, "c.json", env={"V": "v"}, compose_dir="/srv/app")
    except ManifestError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        return
    assert unreported(doc, [e.path for e in conversion.entries]) == []
    assert YAML(typ="safe", pure=True).load(conversion.text) == conversion.manifest
