"""One service's section of a manifest: read from a file of its own, checked in place, and put
into (or taken out of) the project's manifest text, for `service add|update|delete` and
`service revert|version`.

Two rules shape this module:

* The manifest is the user's text. Editing goes through ruamel's round trip, so comments, key
  order, quoting and flow style stay as written, and the text is dumped back with the file's own
  indentation (guessed from where its nested keys and list dashes sit), so a manifest indented
  `mapping 2, list dash 2` comes back byte for byte apart from the section that changed. A
  comment that ruamel hangs on the end of a section (the blank line and the comment heading the
  *next* service) stays in the manifest when the section is replaced or removed.
* A problem is reported where the user can fix it. The section is checked in the whole manifest
  (a service may refer to the others), but its nodes keep the line and column they had in the
  section's own file, and every problem under ``services.NAME`` names that file; a problem
  elsewhere names the version of the project's manifest it is in.

Pure: no I/O and no clock; the control layer runs it on a worker thread.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.manifest.parse import START, Pos, key_pos, load, node_pos
from mariposa.manifest.report import _kind
from mariposa.manifest.rules import Rules
from mariposa.manifest.service import _FAMILIAR_NAMES, _OPTIONS
from mariposa.manifest.validate import validate

FORMS = "the service's options ('image: ...'), or them under 'NAME:' or 'services: {NAME: ...}'"


# ---- which part of a section file is the section --------------------------------------------


def extract(doc: Any, name: str, filename: str) -> tuple[Any, Pos]:
    """The section in a loaded section file, and where its name was written (the start of the
    file for a bare section). A file may hold the bare options, ``NAME: {...}`` or
    ``services: {NAME: {...}}``; it is one service's, so a file that names another service, or
    several, is refused rather than guessed at."""

    def problem(pos: Pos, message: str, field: str = "") -> ManifestError:
        return ManifestError([ManifestProblem(filename, pos[0] + 1, pos[1] + 1, field, message)])

    if doc is None:
        raise problem(START, f"the file is empty; it needs {FORMS.replace('NAME', name)}")
    if not isinstance(doc, Mapping):
        raise problem(node_pos(doc), f"expected {FORMS.replace('NAME', name)}, got {_kind(doc)}")
    if len(doc) == 1:
        [key] = doc
        value = doc[key]
        if key == name and (value is None or isinstance(value, Mapping)):
            return value, key_pos(doc, key)
        if key == "services" and isinstance(value, Mapping):
            if list(value) == [name]:
                return value[name], key_pos(value, name)
            named = ", ".join(repr(str(k)) for k in value)
            several = f"services {named}" if len(value) > 1 else f"service {named}"
            raise problem(node_pos(value), f"the file describes {several}; this command takes the section of "
                                           f"service '{name}' only", "services")
        if isinstance(value, Mapping) and key not in _OPTIONS and key not in _FAMILIAR_NAMES:
            raise problem(key_pos(doc, key), f"the file describes service {str(key)!r}, not {name!r}", str(key))
    return doc, START


# ---- checking a manifest with one section changed -------------------------------------------


def _within(field: str, name: str) -> bool:
    own = f"services.{name}"
    return field == own or field.startswith((own + ".", own + "["))


def read(text: str, filename: str, name: str) -> tuple[Any, Pos]:
    """Service ``name``'s section in a section file, for ``check``: loaded as a manifest is (its
    bounds, syntax errors and duplicate keys reported at their line:column in ``filename``)."""
    return extract(load(text, filename), name, filename)


def check(
    manifest: str, label: str, name: str, section: tuple[Any, Pos] | None, filename: str, rules: Rules,
) -> None:
    """Raise ``ManifestError`` unless ``manifest`` with service ``name``'s section replaced by
    ``section`` (from ``read``; added when the manifest has none; removed when it is None) is
    valid. Problems in the section name ``filename`` and their line:column in it; others name
    ``label`` (the stored manifest, e.g. "<project p, version 3>"). ``rules`` are what the
    version is judged by next (manifest/rules.py)."""
    doc = load(manifest, label)
    services = doc["services"]
    if section is None:
        del services[name]
    else:
        node, at = section
        services[name] = node
        # the key's position too: "'image' is required" points at the service's name
        services.lc.add_kv_line_col(name, [*at, *node_pos(node, at)])
    try:
        validate(doc, label, rules)
    except ManifestError as exc:
        if section is None:
            raise
        raise ManifestError(
            attrs.evolve(p, file=filename) if _within(p.field, name) else p for p in exc.problems
        ) from None


# ---- editing the text -------------------------------------------------------------------------


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    return y


Evidence = tuple[Counter[int], Counter[tuple[int, int]]]


def _evidence(doc: Any) -> Evidence:
    """How the block nodes in ``doc`` are indented: mapping indents, and (list item indent,
    list dash offset) pairs, each counted. Offsets are from the parent key's column, so they
    hold for a node read from another file as much as for the manifest's own."""
    maps: Counter[int] = Counter()
    seqs: Counter[tuple[int, int]] = Counter()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, CommentedSeq):
            stack.extend(node)
        if not isinstance(node, CommentedMap) or node.fa.flow_style():
            continue
        for key, value in node.items():
            stack.append(value)
            try:
                line, col = node.lc.key(key)
            except (KeyError, TypeError):
                continue
            if not isinstance(value, CommentedMap | CommentedSeq) or value.fa.flow_style() or not value:
                continue
            if value.lc.line is None or value.lc.line <= line:
                continue
            if isinstance(value, CommentedMap):
                maps[value.lc.col - col] += 1
            elif not isinstance(value[0], CommentedSeq):  # "- - x" is written compact, whatever the style
                seqs[(value.lc.item(0)[1] - col, value.lc.col - col)] += 1
    return maps, seqs


def _indentation(own: Evidence, fallback: Evidence) -> tuple[int, int, int]:
    """(mapping indent, list item indent, list dash offset) as most of the manifest writes them;
    as the sections put into it write them when it has no such block; else ruamel's (2, 2, 0)."""
    maps = own[0] or fallback[0]
    seqs = own[1] or fallback[1]
    mapping = maps.most_common(1)[0][0] if maps else 2
    sequence, offset = seqs.most_common(1)[0][0] if seqs else (mapping, 0)
    return max(mapping, 1), max(sequence, offset + 2), max(offset, 0)


def _last_slot(node: Any) -> tuple[Any, Any, int] | None:
    """Where ruamel keeps the comment that follows a block: on the deepest last entry."""
    slot: tuple[Any, Any, int] | None = None
    while isinstance(node, CommentedMap | CommentedSeq) and node and not node.fa.flow_style():
        if isinstance(node, CommentedMap):
            key = list(node)[-1]
            slot = (node, key, 2)
        else:
            key = len(node) - 1
            slot = (node, key, 0)
        node = node[key]
    return slot


def _trailing(node: Any) -> str:
    """The comment lines after a block, past the end-of-line comment of its last value."""
    slot = _last_slot(node)
    if slot is None:
        return ""
    entry = slot[0].ca.items.get(slot[1])
    token = entry[slot[2]] if entry and len(entry) > slot[2] else None
    if not isinstance(token, CommentToken):
        return ""
    value = token.value
    return value[value.index("\n") + 1:] if "\n" in value else ""


def _set_trailing(node: Any, lines: str) -> None:
    slot = _last_slot(node)
    if slot is None:
        return
    container, key, index = slot
    entry = container.ca.items.setdefault(key, [None, None, None, None])
    token = entry[index]
    if isinstance(token, CommentToken):
        value = token.value
        own = value[: value.index("\n") + 1] if "\n" in value else value + "\n"
        if own.strip() or lines:
            token.value = own + lines
        else:
            entry[index] = None
    elif lines:
        entry[index] = CommentToken("\n" + lines, CommentMark(0))


class Editor:
    """A manifest's text loaded for editing, dumped back in its own indentation."""

    def __init__(self, text: str):
        self.doc = _yaml().load(text)
        self.own = _evidence(self.doc)
        self.borrowed: Evidence = (Counter(), Counter())

    @property
    def indent(self) -> tuple[int, int, int]:
        return _indentation(self.own, self.borrowed)

    @property
    def services(self) -> Any:
        return self.doc["services"]

    def section(self, name: str, filename: str = "<section>") -> Any:
        """The section of service ``name`` when this text is a section file (see ``extract``)."""
        return extract(self.doc, name, filename)[0]

    def section_of(self, text: str, name: str, filename: str = "<section>") -> Any:
        """Service ``name``'s section from a section file's ``text``, its lines moved right to
        where this manifest's service options sit: ruamel writes a comment back at the column
        it was read at, so a comment read at column 0 would otherwise land left of its options."""
        section = Editor(text).section(name, filename)
        services = self.services
        if not services or services.fa.flow_style() or not isinstance(section, CommentedMap) or not section:
            return section
        if section.fa.flow_style() or section.lc.col is None:
            return section
        shift = key_pos(services, next(iter(services)))[1] + self.indent[0] - section.lc.col
        if shift <= 0:
            return section
        moved = "".join(" " * shift + line if line.strip() else line for line in text.splitlines(keepends=True))
        try:
            return Editor(moved).section(name, filename)
        except (YAMLError, ManifestError):  # a directive or a document marker must stay at column 0
            return section

    def put(self, name: str, section: Any) -> None:
        """Replace service ``name``'s section in place, or add it after the last service."""
        services = self.services
        maps, seqs = _evidence(section)
        self.borrowed[0].update(maps)
        self.borrowed[1].update(seqs)
        # the old section's tail (a blank line, the next service's heading) is the manifest's, not the
        # section's: it stays; the tail of the section's own file does not come along
        _set_trailing(section, _trailing(services[name]) if name in services else "")
        services[name] = section

    def drop(self, name: str) -> None:
        """Remove service ``name``; what followed its section (the next one's heading) stays."""
        services = self.services
        names = list(services)
        keep = _trailing(services[name])
        at = names.index(name)
        del services[name]
        if at > 0:
            _set_trailing(services[names[at - 1]], keep)
        elif services and keep.strip():  # it was the first: the next one's heading opens the mapping
            keep = keep.lstrip("\n")
            indent = len(keep) - len(keep.lstrip(" "))
            tokens = [CommentToken(keep[indent:], CommentMark(indent))]
            services.ca.comment = [None, tokens]
            entry = self.doc.ca.items.get("services")
            if entry and len(entry) > 3 and entry[3]:  # ruamel keeps this heading twice; it writes this one
                entry[3] = tokens

    def text(self) -> str:
        y = _yaml()
        mapping, sequence, offset = self.indent
        y.indent(mapping=mapping, sequence=sequence, offset=offset)
        out = io.StringIO()
        y.dump(self.doc, out)
        return out.getvalue()


def service_slice(text: str, service: str) -> str | None:
    """``services: {service: ...}`` as the manifest ``text`` writes it; None if it has no such service."""
    editor = Editor(text)
    section = (editor.doc or {}).get("services", {}).get(service)
    if section is None:
        return None
    _set_trailing(section, "")  # what follows the section heads the next one
    editor.doc = CommentedMap(services=CommentedMap({service: section}))
    return editor.text()
