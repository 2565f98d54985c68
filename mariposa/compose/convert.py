"""A compose file (v2, v3 or the version-less compose specification) to a Mariposa manifest and
a report of what became of each of its fields.

Pure: the caller reads the file, its ``.env`` and its environment, and gives them here; nothing
is read or run. The manifest that comes out is then added through the same path as any other
(`project add`'s), so the daemon's validator judges it by the host's rules."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import attrs

from mariposa.compose.engine import Converter, Service, _within, plain, run
from mariposa.compose.fields import SERVICE_FIELDS, service_name
from mariposa.compose.interpolate import InterpolationError, interpolate
from mariposa.compose.report import UNMAPPED, Entry, format_report
from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.manifest.parse import Pos, load, node_pos
from mariposa.manifest.report import _At

# Strings a YAML 1.1 reader would take for numbers ("8080:80") or booleans ("no"), quoted.
_SEXAGESIMAL = re.compile(r"[0-9][0-9:]*:[0-9]+(/[a-z]+)?|(?i:y|n|yes|no|on|off|true|false)")
HEADER = "# Converted from {filename} by `mariposa project import-compose`; its report says what changed.\n"


@attrs.frozen
class Conversion:
    manifest: dict  # plain data
    text: str  # the manifest as YAML
    entries: tuple[Entry, ...]  # the report, in file order
    origins: Mapping[str, Pos]  # manifest field path -> 0-based (line, column) in the compose file
    form: str  # "compose format 3.8", "the compose specification (no version)"
    filename: str

    @property
    def unmapped(self) -> list[Entry]:
        return [e for e in self.entries if e.status == UNMAPPED]

    def report(self) -> str:
        return format_report(self.entries, self.filename, self.form)

    def origin(self, field: str) -> tuple[int, int] | None:
        """1-based (line, column) in the compose file of the manifest field ``field``
        (``services.web.ports[0]``), through the longest path it was written from."""
        best = max((p for p in self.origins if _within(field, p)), key=len, default=None)
        if best is None:
            return None
        line, column = self.origins[best]
        return line + 1, column + 1


def convert(text: str, filename: str = "docker-compose.yml", *, env: Mapping[str, str] | None = None,
            compose_dir: str = ".", absolute_paths: bool = False, home: str | None = None) -> Conversion:
    """The manifest for the compose file ``text``. ``env`` fills its ``${VARIABLES}`` (the
    caller's environment over its ``.env``, as compose does); relative paths stay relative (the
    manifest is given ``compose_dir`` as its directory) unless ``absolute_paths``.
    Raises ``ManifestError`` (positions in the compose file) for what cannot be converted."""
    doc = load(text, filename)
    conv = Converter(filename, env or {}, compose_dir, absolute_paths, home)
    if not isinstance(doc, Mapping):
        raise ManifestError([ManifestProblem(filename, 1, 1, "", "a compose file is a mapping with 'services:'")])
    root = _At(doc, node_pos(doc), "", node_pos(doc))
    _interpolate(conv, root)
    form = _form(conv, root)
    top = dict(root.entries())
    for key in ("services", "volumes", "networks"):
        if key in top:
            conv.origins[key] = top[key].key_pos
    manifest: dict[str, Any] = {}
    if "volumes" in top:
        manifest_volumes = _top_volumes(conv, top["volumes"])
        if manifest_volumes is not None:
            manifest["volumes"] = manifest_volumes
    if "networks" in top:
        conv.manifest_networks = _top_networks(conv, top["networks"])
    manifest = {"services": _services(conv, top.get("services"), root), **manifest}
    if conv.manifest_networks:
        manifest["networks"] = conv.manifest_networks
    for key, at in top.items():
        if key in ("services", "volumes", "networks"):
            continue
        if key == "version":
            conv.changed(at, f"{form}; a manifest has no format version")
        elif key == "name":
            conv.changed(at, "the project is named by import-compose's NAME argument")
        elif key in ("secrets", "configs"):
            conv.unmapped(at, f"top-level {key}: mount their files with volumes: until Mariposa has secrets")
        elif key == "include":
            conv.unmapped(at, "the importer reads one file: merge the included files into it")
        else:
            run({}, conv, Service(conv, "", root), key, at)  # x-* extensions, or unknown
    if conv.problems:
        raise ManifestError(conv.problems)
    _no_silent_drops(conv, root)
    entries = tuple(sorted(conv.entries, key=lambda e: (e.line, e.column)))
    return Conversion(manifest, HEADER.format(filename=filename) + dump(manifest), entries, dict(conv.origins),
                      form, filename)


def _form(conv: Converter, root: _At) -> str:
    version = root.value.get("version")
    if version is None:
        if "services" not in root.value and root.value:
            conv.problems.append(ManifestProblem(
                conv.filename, 1, 1, "", "compose format 1 (services at the top level) is not supported: put them "
                "under 'services:'"))
        return "compose specification, no version"
    text = str(version).strip()
    if not text.startswith(("2", "3")):
        (at,) = [a for k, a in root.entries() if k == "version"]
        conv.problem(at, f"compose format {text!r}: the importer reads formats 2 and 3, and files without version")
    return f"compose format {text}"


def _interpolate(conv: Converter, at: _At) -> None:
    """Fill ``${VAR}`` in every string value, in place, noting which variables each path used."""
    if isinstance(at.value, Mapping):
        children = list(at.entries())
    elif isinstance(at.value, list):
        children = list(enumerate(at.items()))
    else:
        return
    for key, child in children:
        if isinstance(child.value, str) and "$" in child.value:
            used: set[str] = set()
            try:
                filled = interpolate(child.value, conv.env, used)
            except InterpolationError as exc:
                conv.problem(child, str(exc))
                continue
            at.value[key] = filled  # type: ignore[index]  # a round-trip map or list, both mutable
            if used:
                conv.interpolated[child.field] = used
        else:
            _interpolate(conv, child)


def _services(conv: Converter, at: _At | None, root: _At) -> dict[str, Any]:
    if at is None or not isinstance(at.value, Mapping) or not at.value:
        where = at or root
        conv.problem(where, "a compose file needs 'services:', a mapping of at least one service")
        return {}
    for name in at.value:
        new = service_name(str(name))
        if new != name:
            conv.renamed[str(name)] = new
    taken: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, entry in at.entries():
        new = service_name(str(name))
        if not new or new in taken:
            conv.problem(entry, f"service {name!r} cannot be named {new!r} in a manifest"
                                + (f": {taken[new]!r} is too" if new in taken else ""), on_key=True)
            continue
        taken[new] = str(name)
        if new != name:
            conv.changed(entry, f"renamed {new}: a service name is a DNS label (lowercase letters, digits, '-'); "
                                f"other services' settings that name {name!r} are not rewritten")
        if not isinstance(entry.value, Mapping):
            conv.problem(entry, "expected a mapping of service options")
            continue
        svc = Service(conv, new, entry)
        conv.origins[f"services.{new}"] = entry.key_pos
        for key, option in entry.entries():
            run(SERVICE_FIELDS, conv, svc, key, option)
        if "image" not in svc.out:
            build = " (it has build:, which has no meaning without a builder: build it and name it in image:)" if (
                "build" in entry.value) else ""
            conv.problem(entry, f"service {name!r} has no image{build}", on_key=True)
            continue
        out[new] = {"image": svc.out.pop("image"), **svc.out}
    return out


def _top_volumes(conv: Converter, at: _At) -> dict[str, Any] | None:
    if at.value is None:
        conv.mapped(at, "empty")
        return None
    if not isinstance(at.value, Mapping):
        conv.problem(at, "expected a mapping of volume names")
        return None
    out: dict[str, Any] = {}
    for name, entry in at.entries():
        conv.origins[f"volumes.{name}"] = entry.key_pos
        out[str(name)] = {}
        if entry.value is None or (isinstance(entry.value, Mapping) and not entry.value):
            conv.mapped(entry, "a volume of the project, kept until --purge-volumes")
            continue
        if not isinstance(entry.value, Mapping):
            conv.problem(entry, "expected a mapping of volume options")
            continue
        for key, option in entry.entries():
            if key == "labels":
                out[str(name)]["labels"] = plain(option.value)
                conv.mapped(option)
            elif key == "driver" and option.value == "local":
                conv.mapped(option, "the local driver is what Mariposa uses")
            elif key == "external":
                conv.unmapped(option, f"the volume is the project's own (mariposa_PROJECT_{name} on Docker), "
                                      "so the existing volume's data is not used: copy it over")
            elif key == "name":
                conv.unmapped(option, "the runtime name is mariposa_PROJECT_VOLUME, so a project added again "
                                      "under its name finds its data")
            else:
                conv.unmapped(option, f"volume option {key!r} is not applied: a local volume")
    return out


def _top_networks(conv: Converter, at: _At) -> dict[str, Any]:
    if not isinstance(at.value, Mapping):
        if at.value is not None:
            conv.problem(at, "expected a mapping of network names")
        return {}
    out: dict[str, Any] = {}
    for name, entry in at.entries():
        options = entry.value if isinstance(entry.value, Mapping) else {}
        if name == "default":
            if options:
                conv.unmapped(entry, "the project's own network is its default network; its options are not set")
            else:
                conv.mapped(entry, "the project's own network")
            continue
        external = options.get("external")
        runtime_name = options.get("name")
        if isinstance(external, Mapping):  # format 2's external: {name: x}
            runtime_name = external.get("name", runtime_name)
            external = True
        key = str(name)
        if external and runtime_name and runtime_name != name:
            conv.network_names[key] = key = str(runtime_name)
        conv.origins[f"networks.{key}"] = entry.key_pos
        out[key] = {"external": True} if external else {}
        if external:
            note = f"joins the existing network {key}" + (f" ({name} -> {key})" if key != name else "")
            conv.changed(entry, note)
        else:
            conv.changed(entry, "a network created by this project that other projects may join (external: true); "
                                "the project's own network still joins all of its services")
        for option, opt_at in (entry.entries() if isinstance(entry.value, Mapping) else ()):
            if option in ("external", "name") and external:
                continue
            conv.unmapped(opt_at, f"network option {option!r} is not applied")
    return out


def _no_silent_drops(conv: Converter, root: _At) -> None:
    """Every key path of the file has an entry (its own, an ancestor's or a descendant's); one
    without would be a field the table forgot, reported rather than lost."""
    reported = [e.path for e in conv.entries]

    def walk(at: _At) -> None:
        if not isinstance(at.value, Mapping):
            return
        for _key, child in at.entries():
            if not any(_within(p, child.field) or _within(child.field, p) for p in reported):
                conv.unmapped(child, "not understood by the importer")
                reported.append(child.field)
            else:
                walk(child)

    walk(root)


def dump(manifest: dict) -> str:
    """The manifest as block YAML, short lists of scalars on one line as people write them."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    def styled(value: Any) -> Any:
        if isinstance(value, str) and _SEXAGESIMAL.fullmatch(value):
            return DoubleQuotedScalarString(value)  # "8080:80": YAML 1.1 readers take it for a number
        if isinstance(value, Mapping):
            return CommentedMap((k, styled(v)) for k, v in value.items())
        if isinstance(value, list):
            seq = CommentedSeq(styled(v) for v in value)
            if value and all(isinstance(v, (str, int, float)) for v in value) and len(str(value)) < 60:
                seq.fa.set_flow_style()
            return seq
        return value

    yaml = YAML(typ="rt", pure=True)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump(styled(manifest), out)
    return out.getvalue()
