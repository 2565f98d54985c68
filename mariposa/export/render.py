"""Text out: block YAML (one or many documents) and JSON, the same way for every target.

The YAML is written here, not by ruamel: the exports are plain data (mappings, lists, strings,
numbers, booleans, null), and ruamel's pure-Python emitter took 3.8 s for a 100-service
Kubernetes export, its libyaml one ignoring the block style and key order asked for. A string is
written bare only when every YAML reader takes it back as that same string, 1.1 (PyYAML:
docker-compose) and 1.2 alike; any other is written in double quotes with JSON's escapes, which
are YAML's too. ``tests/property/test_export_yaml.py`` reads random data back through both.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Bare: starts with a letter, digit, '/', '.', '_' or '$'; then also spaces, ':', '-', '+', '=',
# '@', '%', ',' and '~' inside; no ': ' or ' #' (a mapping or a comment), no trailing space.
_PLAIN = re.compile(r"[A-Za-z0-9/._$][A-Za-z0-9/._$ :+=@%,~-]*")
# Words YAML 1.1 readers take for booleans or null, and anything that reads as a number or time.
_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
# What YAML readers refuse raw, or read as a line break, inside quotes (JSON leaves them raw)
_ODD = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")
_NUMBERISH = re.compile(r"[-+]?(\.?[0-9][0-9_:.eE+-]*|\.inf|\.nan|0x[0-9a-f_]+|0o?[0-7_]+|0b[01_]+)")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)  # YAML 1.1 needs a dot, and a sign on the exponent (1.0e-06; repr gives 1e-06)
        if "e" in text and "." not in text:
            text = text.replace("e", ".0e")
        return text if "." in text or "e" in text else text + ".0"
    text = str(value)
    low = text.lower()
    if (_PLAIN.fullmatch(text) and ": " not in text and " #" not in text and not text.endswith((" ", ":"))
            and low not in _WORDS and not _NUMBERISH.fullmatch(low)):
        return text
    return _ODD.sub(lambda m: f"\\u{ord(m[0]):04x}", json.dumps(text, ensure_ascii=False))


def _lines(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(item, (dict, list)) and item:
                out.append(head)
                _lines(item, indent + 2 if isinstance(item, dict) else indent, out)
            else:
                out.append(f"{head} {_empty(item)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner: list[str] = []
                _lines(item, indent + 2, inner)
                first = inner[0][indent + 2:]
                out.append(f"{pad}- {first}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {_empty(item)}")


def _empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def yaml_text(doc: Any) -> str:
    if not isinstance(doc, (dict, list)) or not doc:
        return _empty(doc) + "\n"
    out: list[str] = []
    _lines(doc, 0, out)
    return "\n".join(out) + "\n"


def yaml_documents(docs: list[Any]) -> str:
    return "---\n".join(yaml_text(d) for d in docs)


def json_text(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"
