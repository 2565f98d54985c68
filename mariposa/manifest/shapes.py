"""The shapes options share (a string, one of a few words, a list of k=v, a command line...),
each recording a problem and carrying on rather than raising."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mariposa.manifest import interpolate
from mariposa.manifest.report import (
    _At,
    _did_you_mean,
    _is_int,
    _is_unquoted_template,
    _kind,
    _Report,
    _scalar_text,
)
from mariposa.manifest.rules import Rules
from mariposa.manifest.units import parse_size, split_command
from mariposa.model import PortSpec
from mariposa.packages import Package

MAX_SECONDS = 366 * 24 * 3600  # a duration in a manifest is seconds to days; past a year it is a typo


def _unprintable(value: Any) -> bool:
    """An integer too long for str() (Python's 4,300-digit limit), from a huge hex literal."""
    return isinstance(value, int) and value.bit_length() > 13_000


def _shown(value: float) -> str:
    """A number as a message may quote it: Python refuses to print an int of 4,300+ digits."""
    if isinstance(value, int) and abs(value) >= 10**18:
        return f"a number of {value.bit_length():,} bits"
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Shapes:
    def __init__(self, report: _Report, rules: Rules, at: _At):
        self.report = report
        self.rules = rules
        self.packages = rules.packages
        self.allow_privileged = rules.allow_privileged
        self.env_files = rules.env_files  # path -> text or {"error": why}, read when the version was made
        self.env_from_files: dict[str, str] = {}
        self.at = at
        self.fields: dict[str, Any] = {}
        self.seen: dict[str, _At] = {}
        self.failed = False
        self.suggested: set[str] = set()  # option names offered for typos, e.g. image for imgae
        # Kept aside for cross_checks, which need other options' values before they settle.
        self.chosen_package: Package | None = None
        self.port_ats: list[tuple[PortSpec, _At]] = []
        self.meta_keys: set[str] = set()  # used by fields fixed when an instance is made
        self.secret_refs: list[_At] = []  # where environment names {{ .secret.NAME }} (needs secret_env)

    def secret_template(self, at: _At, var: interpolate.Var, field: str | None) -> str | None:
        """A secret in a template: only in environment (everything else shows in `docker inspect`
        or argv), only a secret the project has; secret_env is checked once all options are read."""
        if field != "environment":
            return (f"{var.name}: a secret may appear only in environment (on a service with "
                    "secret_env: true); give it as a file with secrets: [NAME] instead")
        secrets = self.rules.secrets
        name = interpolate.secret_of(var.path)
        if secrets is not None and name not in secrets:
            return (f"unknown secret {name!r} in {var.name}: set it first with "
                    f"'mariposa -j PROJECT secret set {name}'")
        self.secret_refs.append(at)
        return None

    def template(self, at: _At, text: str, fixed: bool = True, field: str | None = None) -> bool:
        """Whether ``text``'s templates (manifest/interpolate.py) parse and name variables that
        exist, each problem recorded at ``at``. The meta keys a ``fixed`` field uses are noted:
        a change to one is a new version of the service."""
        if "{{" not in text:
            return True
        try:
            found = interpolate.variables(text)
        except interpolate.TemplateError as exc:
            self.problem(at, str(exc))
            return False
        ok = True
        for var in found:
            why = interpolate.check_variable(var)
            meta = self.rules.meta
            if why is None and var.path[0] == "secret":
                why = self.secret_template(at, var, field)
            if why is None and var.path[0] == "meta" and meta is not None and var.path[1] not in meta:
                why = (f"undefined variable {var.name}: the project has no meta key '{var.path[1]}' "
                       f"(set it first: mariposa -j PROJECT meta set {var.path[1]} VALUE)")
            if why is not None:
                self.problem(at, why)
                ok = False
            elif fixed and var.path[0] == "meta":
                self.meta_keys.add(var.path[1])
        return ok

    def problem(self, at: _At, message: str, on_key: bool = False) -> None:
        self.failed = True
        self.report.add(at, message, on_key=on_key)

    def wrong_type(self, at: _At, expected: str) -> None:
        self.failed = True
        self.report.wrong_type(at, expected)

    def size(self, at: _At, example: str = "512m or 1g") -> int | None:
        """Bytes, from 512m, 1g, 1.5GiB or an integer number of bytes (manifest/units.py)."""
        if not isinstance(at.value, (str, int)) or isinstance(at.value, bool):
            self.wrong_type(at, f"a size such as {example}, or an integer number of bytes")
            return None
        try:
            return parse_size(at.value)
        except ValueError as exc:
            self.problem(at, str(exc))
            return None

    def flag(self, at: _At) -> bool | None:
        if not isinstance(at.value, bool):
            self.wrong_type(at, "true or false")
            return None
        return at.value

    def string(self, at: _At) -> str | None:
        if not isinstance(at.value, str):
            self.wrong_type(at, "a string")
            return None
        if not at.value.strip():
            self.problem(at, "must not be empty")
            return None
        return str(at.value)

    def choice(self, at: _At, choices: Iterable[str], what: str) -> str | None:
        value = self.string(at)
        choices = list(choices)
        if value is not None and value not in choices:
            hint = _did_you_mean(value, choices)
            self.problem(
                at, f"unknown {what} {value!r}{hint} (expected one of {', '.join(choices)})"
            )
            return None
        return value

    def integer(
        self, at: _At, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        if not _is_int(at.value):
            if isinstance(at.value, str) and re.fullmatch(r"\s*-?\d+\s*", at.value):
                message = f"must be an integer, got the string {at.value!r} (drop the quotes)"
                self.problem(at, message)
            else:
                self.wrong_type(at, "an integer")
            return None
        value = int(at.value)
        if minimum is not None and value < minimum:
            self.problem(at, f"must be {minimum} or more, got {_shown(value)}")
            return None
        if maximum is not None and value > maximum:
            self.problem(at, f"must be {maximum} or less, got {_shown(value)}")
            return None
        return value

    def list_of(self, at: _At, what: str) -> list[_At] | None:
        if not isinstance(at.value, list):
            self.wrong_type(at, f"a list of {what}")
            return None
        return list(at.items())

    def strings(self, at: _At) -> list[tuple[str, _At]] | None:
        items = self.list_of(at, "strings")
        if items is None:
            return None
        out = []
        for item in items:
            if not isinstance(item.value, str):
                self.wrong_type(item, "a string")
            elif not item.value.strip():
                self.problem(item, "must not be empty")
            else:
                out.append((str(item.value), item))
        return out

    def pairs(self, at: _At, what: str, bare_ok: bool) -> list[tuple[str, str, _At]] | None:
        """``KEY=VALUE`` strings, one-key mappings or a mapping, as (key, value, where) in order."""
        if isinstance(at.value, Mapping) and not _is_unquoted_template(at.value):
            sources = [(at, True)]
        elif isinstance(at.value, list):
            sources = [(item, isinstance(item.value, Mapping)) for item in at.items()]
        else:
            self.wrong_type(at, "a list of KEY=VALUE strings or a mapping")
            return None
        out: list[tuple[str, str, _At]] = []
        for source, is_map in sources:
            if is_map and not _is_unquoted_template(source.value):
                for key, entry in source.entries():
                    if not isinstance(key, (str, int)) or isinstance(key, bool):
                        message = f"{what} names must be strings, got {_kind(key)}"
                        self.problem(entry, message, on_key=True)
                        continue
                    if _unprintable(key) or _unprintable(entry.value):
                        # Python refuses str() of an int over 4,300 digits: a crash, not a problem
                        number = int(key) if _unprintable(key) else int(entry.value)
                        self.problem(entry, f"{what} entry is {_shown(number)}; quote it to make it a string",
                                     on_key=_unprintable(key))
                        continue
                    text = _scalar_text(entry.value)
                    if text is None:
                        self.wrong_type(entry, "a string")
                    else:
                        out.append((str(key), text, entry))
            elif isinstance(source.value, str):
                key, sep, value = source.value.partition("=")
                if not sep and not bare_ok:
                    message = f"{what} entry {key!r} has no '='; write '{key}=' for an empty value"
                    self.problem(source, message)
                    continue
                out.append((key.strip(), value, source))
            else:
                self.wrong_type(source, "a KEY=VALUE string or a one-key mapping")
        return out

    def options(self, at: _At, known: Iterable[str], what: str) -> dict[str, _At] | None:
        """A mapping, or the spec's list of one-key mappings (``- timeout: -1``), as one dict."""
        if isinstance(at.value, Mapping):
            sources = [at]
        elif isinstance(at.value, list):
            sources = []
            for item in at.items():
                if isinstance(item.value, Mapping):
                    sources.append(item)
                else:
                    self.wrong_type(item, f"a one-key mapping of a {what} option")
        else:
            self.wrong_type(at, f"a mapping of {what} options")
            return None
        known = list(known)
        out: dict[str, _At] = {}
        for source in sources:
            for key, entry in source.entries():
                if key not in known:
                    hint = _did_you_mean(key, known)
                    self.problem(entry, f"unknown {what} option {key!r}{hint}", on_key=True)
                elif key in out:
                    self.problem(entry, f"{what} option {key!r} is given twice", on_key=True)
                else:
                    out[key] = entry
        return out

    def argv(self, at: _At, fixed: bool = True) -> tuple[str, ...] | None:
        """A command line, its words kept as written: templates are rendered word by word when
        used, so a value with spaces stays one word."""
        if isinstance(at.value, str):
            if not self.template(at, at.value, fixed):
                return None
            try:
                words = split_templated(at.value)
            except ValueError as exc:
                self.problem(at, f"cannot split the command line: {exc}")
                return None
            if not words:
                self.problem(at, "must not be empty (leave it out to use the image's default)")
                return None
            return tuple(words)
        if isinstance(at.value, list):
            words = []
            for item in at.items():
                if not isinstance(item.value, str):
                    self.wrong_type(item, "a string")
                elif self.template(item, item.value, fixed):
                    words.append(str(item.value))
            if not at.value:
                self.problem(at, "must not be empty (leave it out to use the image's default)")
                return None
            return tuple(words)
        self.wrong_type(at, "a string or a list of strings")
        return None

    def unsupported(self, at: _At, message: str) -> None:
        """Options the spec defines but Mariposa cannot honour yet; empty ones mean 'not used'."""
        if at.value is None or at.value is False:
            return
        if isinstance(at.value, (list, Mapping)) and not at.value:
            return
        self.problem(at, message)

    # -- the options, in the spec's order ----------------------------------------------------------

    def seconds(self, at: _At, positive: bool) -> float | None:
        value = at.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.wrong_type(at, "a number of seconds")
            return None
        if not (-MAX_SECONDS <= value <= MAX_SECONDS):  # also false for .nan; never float()s a huge int
            self.problem(at, f"must be a finite number of seconds, at most {MAX_SECONDS:,} (a year), "
                             f"got {_shown(value)}")
            return None
        if value < 0 or (positive and value == 0):
            self.problem(at, f"must be {'more than' if positive else 'at least'} 0, got {value:g}")
            return None
        return float(value)


def split_templated(text: str) -> list[str]:
    """``split_command`` that leaves each ``{{ ... }}`` inside one word: a template holds spaces
    (``{{ .meta.x }}``) that are not word breaks."""
    if "{{" not in text:
        return split_command(text)
    held: list[str] = []

    def hold(match: re.Match) -> str:
        held.append(match.group(0))
        return f"\0{len(held) - 1}\0"

    masked = re.sub(r"\{\{\{\{|\{\{[^}]*\}\}", hold, text)
    return [re.sub(r"\0(\d+)\0", lambda m: held[int(m.group(1))], word) for word in split_command(masked)]
