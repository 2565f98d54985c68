"""Text out: block YAML (one or many documents) and JSON, the same way for every target."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.representer import SafeRepresenter

# Words YAML 1.1 readers (PyYAML: docker-compose, kubectl's older paths) take for booleans or
# null, which a YAML 1.2 dumper writes bare: `restart: no` would reach compose as false.
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""})
_NUMBERISH = re.compile(r"[-+]?(\.?[0-9][0-9_:.eE+-]*|\.inf|\.nan|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)")


def _str(representer: SafeRepresenter, value: str):
    if value.lower() in _YAML11_WORDS or _NUMBERISH.fullmatch(value.lower()):
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return representer.represent_str(value)


def _yaml() -> YAML:
    # ruamel's pure emitter: its libyaml one ignores the block style and key order asked here
    # (100 services' Kubernetes objects take about a second this way)
    yaml = YAML(typ="safe", pure=True)
    yaml.representer.add_representer(str, _str)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096
    return yaml


def yaml_text(doc: Any) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def yaml_documents(docs: list[Any]) -> str:
    out = io.StringIO()
    _yaml().dump_all(docs, out)
    return out.getvalue()


def json_text(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"
