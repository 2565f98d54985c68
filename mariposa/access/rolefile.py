"""A custom role's file (``mariposa role define FILE``): TOML or YAML with ``name``,
``description`` and a ``capabilities`` list. Every error names the file and the field, and the
line where the format tells it (YAML always; TOML for its own syntax errors, and for a field by
finding the line that sets it)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import attrs

from mariposa.access.capabilities import expand
from mariposa.errors import BadRequest

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_TEXT = 64 * 1024
FIELDS = ("name", "description", "capabilities")


@attrs.frozen
class RoleFile:
    name: str
    description: str
    capabilities: tuple[str, ...]


def _is_toml(filename: str, text: str) -> bool:
    if filename.endswith(".toml"):
        return True
    if filename.endswith((".yaml", ".yml")):
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")), "")
    return bool(re.match(r"[A-Za-z_][\w-]*\s*=", first))


def parse(text: object, filename: str = "<role>") -> RoleFile:
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{filename}: the role file is empty")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"{filename}: a role file is at most {MAX_TEXT // 1024} KiB")
    if _is_toml(filename, text):
        return _from_toml(text, filename)
    return _from_yaml(text, filename)


def _toml_line(text: str, key: str, value: str | None = None) -> str:
    """Where a TOML field (or a value in its list) is set: ':LINE' or '' when not found."""
    quoted = rf"['\"]{re.escape(value)}['\"]" if value is not None else ""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=") if value is None else re.compile(quoted)
    started = value is None
    for number, line in enumerate(text.splitlines(), 1):
        if not started and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            started = True
        if started and pattern.search(line):
            return f":{number}"
    return ""


def _from_toml(text: str, filename: str) -> RoleFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{filename}: not valid TOML: {exc}") from None
    return _checked(data, filename, lambda key, value=None: _toml_line(text, key, value))


def _from_yaml(text: str, filename: str) -> RoleFile:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise BadRequest(f"{filename}{where}: not valid YAML: {exc.problem}") from None
    except YAMLError as exc:
        raise BadRequest(f"{filename}: not valid YAML: {exc}") from None

    def line(key: str, value: str | None = None) -> str:
        try:
            if value is None:
                return f":{data.lc.key(key)[0] + 1}"
            items = data[key]
            return f":{items.lc.item(list(items).index(value))[0] + 1}"
        except Exception:
            return ""

    return _checked(data, filename, line)


def _checked(data: Any, filename: str, line: Any) -> RoleFile:
    if not isinstance(data, dict):
        raise BadRequest(f"{filename}: a role file is a mapping of {', '.join(FIELDS)}")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise BadRequest(f"{filename}{line(str(unknown[0]))}: unknown field '{unknown[0]}' "
                         f"(a role has {', '.join(FIELDS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(f"{filename}{line('name')}: field 'name' must be 1-32 lowercase letters, digits, '-' or '_', "
                         "starting with a letter")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise BadRequest(f"{filename}{line('description')}: field 'description' must be text")
    caps = data.get("capabilities")
    if not isinstance(caps, list) or not caps:
        raise BadRequest(f"{filename}{line('capabilities')}: field 'capabilities' must be a non-empty list of "
                         "capabilities (mariposa role list --capabilities shows them)")
    for item in caps:
        if not isinstance(item, str):
            raise BadRequest(f"{filename}{line('capabilities')}: field 'capabilities': {item!r} is not a name")
        try:
            expand([item])
        except ValueError as exc:
            raise BadRequest(f"{filename}{line('capabilities', item)}: field 'capabilities': {exc}") from None
    return RoleFile(name, description, tuple(str(c) for c in caps))
