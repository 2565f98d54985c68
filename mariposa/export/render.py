"""Text out: block YAML (one or many documents) and JSON, the same way for every target.

The YAML goes through PyYAML's libyaml emitter: the exports are plain data, its safe dumper keeps
the key order and block style asked for, and it quotes every string a YAML 1.1 reader (PyYAML, as
docker-compose reads) would take for something else ('no', '1:30', '0x1F'). ruamel's pure-Python
emitter took 3.8 s for a 100-service Kubernetes export. ``tests/property/test_export_yaml.py``
reads random data back through a 1.1 and a 1.2 reader.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

try:
    _Base: type = yaml.CSafeDumper
except AttributeError:  # PyYAML built without libyaml: the same output, slower
    _Base = yaml.SafeDumper

# What a YAML 1.2 reader (ruamel, Go's yaml.v3) takes for a number, boolean or null that PyYAML's
# 1.1 rules write bare ('0E0', '1e3'): such a string is quoted so every reader reads a string.
_CORE_12 = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+"
                      r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|true|True|TRUE|false|False|FALSE|null|Null|NULL|~|")


class _Dumper(_Base):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if _CORE_12.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)

_STYLE = dict(Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=2**31 - 1)


def yaml_text(doc: Any) -> str:
    return yaml.dump(doc, **_STYLE)  # type: ignore[call-overload]


def yaml_documents(docs: list[Any]) -> str:
    return yaml.dump_all(docs, **_STYLE)  # type: ignore[call-overload]


def json_text(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"
