"""Round-trip nodes to a ``ProjectSpec``, reporting every problem in one pass.

Users fix manifests by hand, so one run should list everything that is wrong, each at the spot to
edit: every check records a problem and carries on instead of raising. Options of the spec that
Mariposa cannot honour yet are still parsed and checked first, so that once the shape is right the
only complaint left is an honest "not supported yet" rather than a silent ignore.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import attrs

from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.manifest.parse import START, Pos, item_pos, key_pos, node_pos, value_pos
from mariposa.manifest.units import MIB, format_size, parse_size, split_command
from mariposa.model import HealthCheck, PortSpec, ProjectSpec, ServiceSpec
from mariposa.packages import Package, package_names, resolve_package

TOP_LEVEL_KEYS = ("services",)
SERVICE_TYPES = ("continuous", "scheduled", "event")
COMPUTE_TYPES = {
    "docker": "docker",
    "infrastructure": "infrastructure",
    "lx": "infrastructure",
    "smartmachine": "infrastructure",
    "kvm": "kvm",
    "vm": "kvm",
    "hvm": "kvm",
    "manta": "manta",
}
RESTART_POLICIES = ("always", "unless-stopped", "no", "on-failure")
PRESERVE_STOPPED = ("on-failure", "no", "always")
HEALTHCHECK_TYPES = ("http", "https", "tcp", "command")
AFFINITY_OPS = ("==~", "!=~", "==", "!=")  # longest first, so "==~" is not read as "==" + "~..."
MIN_MEMORY = 4 * MIB
RESERVED_TAG_PREFIX = "io.mariposa."

# The name becomes a DNS alias on the project network, hence a lowercase DNS label.
SERVICE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
DOMAIN_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
PORT_RE = re.compile(r"^(?:(?P<host>\d+):)?(?P<container>\d+)(?:/(?P<protocol>[A-Za-z]+))?$")
AFFINITY_RE = re.compile(r"^(?P<key>.+?)(?P<op>==~|!=~|==|!=)(?P<value>.*)$")


# ---- the bookkeeping every check shares ---------------------------------------------------------


@attrs.frozen
class _At:
    """A value with where it was written: its own position, its key's, and its dotted path."""

    value: Any
    pos: Pos
    field: str
    key_pos: Pos

    def entries(self) -> Iterable[tuple[Any, _At]]:
        for key in self.value:
            yield key, _At(
                self.value[key],
                value_pos(self.value, key, self.pos),
                f"{self.field}.{key}" if self.field else str(key),
                key_pos(self.value, key, self.pos),
            )

    def items(self) -> Iterable[_At]:
        for index, item in enumerate(self.value):
            pos = item_pos(self.value, index, self.pos)
            yield _At(item, pos, f"{self.field}[{index}]", pos)


class _Report:
    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[ManifestProblem] = []

    def add(
        self, at: _At | Pos, message: str, field: str | None = None, on_key: bool = False
    ) -> None:
        if isinstance(at, _At):
            pos = at.key_pos if on_key else at.pos
            field = at.field if field is None else field
        else:
            pos = at
        line, col = pos
        problem = ManifestProblem(self.filename, line + 1, col + 1, field or "", message)
        self.problems.append(problem)

    def wrong_type(self, at: _At, expected: str) -> None:
        if _is_unquoted_template(at.value):
            self.add(at, f"{_INTERPOLATION} (and a value starting with '{{{{' must be quoted)")
        else:
            self.add(at, f"expected {expected}, got {_kind(at.value)}")


_INTERPOLATION = "meta interpolation ({{ .meta.x }}) is not supported yet"


def _is_unquoted_template(value: Any) -> bool:
    """``x: {{ .meta.y }}`` unquoted is a flow mapping keyed by a mapping, not a string."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(next(iter(value)), Mapping)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, AbstractSet):
        return "a set"
    tag = getattr(value, "tag", None)  # ruamel's TaggedScalar for tags it does not know
    if tag is not None:
        return f"a value tagged {tag}"
    return type(value).__name__


def _closest(word: Any, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return close[0] if close else None


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    guess = _closest(word, choices)
    return f"; did you mean {guess!r}?" if guess else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar_text(value: Any) -> str | None:
    """The string a YAML scalar stands for in an environment or tag value; ``None`` if none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


# ---- the project --------------------------------------------------------------------------------


def validate(doc: Any, filename: str, packages: Mapping[str, Package] | None = None) -> ProjectSpec:
    report = _Report(filename)
    services = _project(doc, report, packages)
    if report.problems or services is None:
        raise ManifestError(report.problems)
    return ProjectSpec(services=tuple(services))


def _project(
    doc: Any, report: _Report, packages: Mapping[str, Package] | None
) -> list[ServiceSpec] | None:
    if doc is None:
        report.add(START, "the manifest is empty; it needs a 'services:' mapping")
        return None
    if not isinstance(doc, Mapping):
        message = f"the manifest must be a mapping with a 'services:' key, got {_kind(doc)}"
        report.add(node_pos(doc), message)
        return None
    root = _At(doc, node_pos(doc), "", node_pos(doc))
    services_at = None
    suggested_services = False
    for key, at in root.entries():
        if key == "services":
            services_at = at
        else:
            hint = _did_you_mean(key, TOP_LEVEL_KEYS)
            suggested_services |= bool(hint)
            report.add(at, f"unknown top-level key {key!r}{hint}", on_key=True)
    if services_at is None:
        if not suggested_services:
            report.add(root, "'services:' is required", field="services")
        return None
    if services_at.value is not None and not isinstance(services_at.value, Mapping):
        report.wrong_type(services_at, "a mapping of service names to options")
        return None
    if not services_at.value:
        report.add(services_at, "must list at least one service")
        return None
    specs = []
    for name, at in services_at.entries():
        spec = _service(name, at, report, packages)
        if spec is not None:
            specs.append(spec)
    return specs


def _service(
    name: Any, at: _At, report: _Report, packages: Mapping[str, Package] | None
) -> ServiceSpec | None:
    ok = True
    if not isinstance(name, str):
        report.add(at, f"service name {name!r} must be a string", on_key=True)
        ok = False
    elif not SERVICE_NAME_RE.match(name):
        report.add(
            at,
            f"invalid service name {name!r}: it becomes a DNS name, so use lowercase letters,"
            " digits and '-' (not '_'), at most 63 characters, starting and ending with a letter"
            " or digit",
            on_key=True,
        )
        ok = False
    if at.value is None:
        report.add(at, "the service has no options; it needs at least an 'image'", on_key=True)
        return None
    if not isinstance(at.value, Mapping):
        report.wrong_type(at, "a mapping of service options")
        return None
    fields = _ServiceChecks(report, packages, at).run()
    if not ok or fields is None:
        return None
    return ServiceSpec(name=name, **fields)


# ---- one service --------------------------------------------------------------------------------


class _ServiceChecks:
    """Checks the options of one service; ``run`` gives ``ServiceSpec`` fields or ``None``."""

    def __init__(self, report: _Report, packages: Mapping[str, Package] | None, at: _At):
        self.report = report
        self.packages = packages
        self.at = at
        self.fields: dict[str, Any] = {}
        self.seen: dict[str, _At] = {}
        self.failed = False
        self.suggested: set[str] = set()  # option names offered for typos, e.g. image for imgae
        # Kept aside for cross_checks, which need other options' values before they settle.
        self.chosen_package: Package | None = None
        self.port_ats: list[tuple[PortSpec, _At]] = []

    def problem(self, at: _At, message: str, on_key: bool = False) -> None:
        self.failed = True
        self.report.add(at, message, on_key=on_key)

    def wrong_type(self, at: _At, expected: str) -> None:
        self.failed = True
        self.report.wrong_type(at, expected)

    def run(self) -> dict[str, Any] | None:
        handlers = _OPTIONS
        for key, at in self.at.entries():
            handler = handlers.get(key) if isinstance(key, str) else None
            if handler is None:
                self.unknown_option(key, at)
                continue
            self.seen[key] = at
            if at.value is None and key != "image":
                continue  # an empty optional option means the default
            handler(self, at)
        self.cross_checks()
        return None if self.failed else self.fields

    def unknown_option(self, key: Any, at: _At) -> None:
        familiar = _FAMILIAR_NAMES.get(key) if isinstance(key, str) else None
        guess = familiar or _closest(key, _OPTIONS)
        if guess:
            self.suggested.add(guess)
        hint = f"; did you mean {guess!r}?" if guess else ""
        self.problem(at, f"unknown option {key!r}{hint}", on_key=True)

    def cross_checks(self) -> None:
        if "labels" in self.seen and "tags" in self.seen:
            later = max(self.seen["labels"], self.seen["tags"], key=lambda a: a.key_pos)
            self.problem(later, "give either 'tags' or its alias 'labels', not both", on_key=True)
        compute = self.fields.get("compute_type", "docker")
        if "image" not in self.seen and "image" not in self.suggested and compute != "manta":
            self.problem(self.at, "'image' is required", on_key=True)
        if self.chosen_package is not None:
            self.fields.setdefault("memory", self.chosen_package.memory)  # explicit memory wins
            self.fields["cpus"] = self.chosen_package.cpus
        scale = self.fields.get("scale")
        if scale is not None and scale > 1:
            for port, at in self.port_ats:
                if port.host is not None:
                    message = f"host port {port.host} can only be bound by one instance"
                    self.problem(at, f"{message}, but scale is {scale}")
        schedule = self.seen.get("schedule")
        if schedule is not None and schedule.value is not None:
            if self.fields.get("service_type", "continuous") != "scheduled":
                self.problem(schedule, "'schedule' is only valid with service_type scheduled")
            else:
                self.problem(schedule, "'schedule' is not supported yet")

    # -- shared shapes ----------------------------------------------------------------------------

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
            self.problem(at, f"must be {minimum} or more, got {value}")
            return None
        if maximum is not None and value > maximum:
            self.problem(at, f"must be {maximum} or less, got {value}")
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

    def argv(self, at: _At) -> tuple[str, ...] | None:
        if isinstance(at.value, str):
            if "{{" in at.value:
                self.problem(at, _INTERPOLATION)
                return None
            try:
                words = split_command(at.value)
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
                elif "{{" in item.value:
                    self.problem(item, _INTERPOLATION)
                else:
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

    def service_type(self, at: _At) -> None:
        value = self.choice(at, SERVICE_TYPES, "service_type")
        if value is None:
            return
        self.fields["service_type"] = value
        if value != "continuous":
            message = f"service_type {value!r} is not supported yet (continuous only for now)"
            self.problem(at, message)

    def compute_type(self, at: _At) -> None:
        value = self.choice(at, COMPUTE_TYPES, "compute_type")
        if value is None:
            return
        self.fields["compute_type"] = COMPUTE_TYPES[value]
        if COMPUTE_TYPES[value] != "docker":
            self.problem(at, f"compute_type {value!r} is not supported yet (docker only for now)")

    def image(self, at: _At) -> None:
        value = self.string(at)
        if value is None:
            return
        if any(c.isspace() for c in value):
            self.problem(at, f"image {value!r} must not contain whitespace")
            return
        self.fields["image"] = value

    def package(self, at: _At) -> None:
        value = self.string(at)
        if value is None:
            return
        package = resolve_package(value, self.packages)
        if package is None:
            names = package_names(self.packages)
            hint = _did_you_mean(value, names) or f" (known packages: {', '.join(names)})"
            self.problem(at, f"unknown package {value!r}{hint}")
            return
        self.fields["package"] = value
        self.chosen_package = package

    def memory(self, at: _At) -> None:
        if not isinstance(at.value, (str, int)) or isinstance(at.value, bool):
            self.wrong_type(at, "a size such as 512m or 1g, or an integer number of bytes")
            return
        try:
            size = parse_size(at.value)
        except ValueError as exc:
            self.problem(at, str(exc))
            return
        if size < MIN_MEMORY:
            hint = f" (did you mean {at.value}m?)" if _is_int(at.value) else ""
            minimum = format_size(MIN_MEMORY)
            self.problem(at, f"memory must be at least {minimum}, got {size} bytes{hint}")
            return
        self.fields["memory"] = size

    def tags(self, at: _At) -> None:
        pairs = self.pairs(at, "tag", bare_ok=True)
        if pairs is None:
            return
        tags: dict[str, str] = {}
        for key, value, where in pairs:
            if not key:
                self.problem(where, "tag names must not be empty", on_key=True)
            elif key.lower().startswith(RESERVED_TAG_PREFIX):
                reserved = f"names starting with {RESERVED_TAG_PREFIX!r} are reserved for Mariposa"
                self.problem(where, f"tag {key!r}: {reserved}", on_key=True)
            elif key in tags:
                self.problem(where, f"tag {key!r} is given twice", on_key=True)
            elif "{{" in value:
                self.problem(where, _INTERPOLATION)
            else:
                tags[key] = value
        self.fields["tags"] = tuple(tags.items())

    def affinity(self, at: _At) -> None:
        rules = self.strings(at)
        if rules is None:
            return
        out = []
        for text, where in rules:
            match = AFFINITY_RE.match(text.strip())
            if not match or not match["key"].strip() or not match["value"].strip():
                ops = ", ".join(AFFINITY_OPS)
                self.problem(
                    where,
                    f"invalid affinity rule {text!r}; expected <key><op><value>, op one of {ops}",
                )
            elif match["op"] == "!=":
                self.problem(
                    where,
                    f"affinity rule {text!r} (hard anti-affinity) cannot be honoured on a single"
                    " host; use '!=~' for a soft rule",
                )
            else:
                out.append(f"{match['key'].strip()}{match['op']}{match['value'].strip()}")
        self.fields["affinity"] = tuple(out)

    def ports(self, at: _At) -> None:
        items = self.list_of(at, "ports (8080, \"8000:80\", \"53/udp\")")
        if items is None:
            return
        ports: list[tuple[PortSpec, _At]] = []
        for item in items:
            port = self.port(item)
            if port is None:
                continue
            if any(p == port for p, _ in ports):
                self.problem(item, f"port {port} is given twice")
            elif port.host is not None and (port.host, port.protocol) in {
                (p.host, p.protocol) for p, _ in ports
            }:
                self.problem(item, f"host port {port.host}/{port.protocol} is bound twice")
            else:
                ports.append((port, item))
        self.fields["ports"] = tuple(p for p, _ in ports)
        self.port_ats = ports

    def port(self, at: _At) -> PortSpec | None:
        if _is_int(at.value):
            container, host, protocol = int(at.value), None, "tcp"
        elif isinstance(at.value, str):
            match = PORT_RE.match(at.value.strip())
            if not match:
                self.problem(
                    at,
                    f"invalid port {at.value!r}; expected CONTAINER or HOST:CONTAINER,"
                    " optionally with /tcp or /udp",
                )
                return None
            container = int(match["container"])
            host = int(match["host"]) if match["host"] is not None else None
            protocol = (match["protocol"] or "tcp").lower()
            if protocol not in ("tcp", "udp"):
                self.problem(
                    at,
                    f"invalid protocol {match['protocol']!r} in port {at.value!r};"
                    " expected tcp or udp",
                )
                return None
        else:
            self.wrong_type(at, "a port number or a string such as \"8000:80/tcp\"")
            return None
        for number in (container, host):
            if number is not None and not 1 <= number <= 65535:
                self.problem(at, f"port {number} is out of range 1-65535")
                return None
        return PortSpec(container=container, host=host, protocol=protocol)

    def dns(self, at: _At) -> None:
        servers = self.strings(at)
        if servers is None:
            return
        out = []
        for text, where in servers:
            try:
                out.append(str(ipaddress.ip_address(text.strip())))
            except ValueError:
                self.problem(where, f"{text!r} is not an IP address")
        self.fields["dns"] = tuple(out)

    def dns_search(self, at: _At) -> None:
        domains = self.strings(at)
        if domains is None:
            return
        out = []
        for text, where in domains:
            name = text.strip().removesuffix(".")
            labels_ok = all(DOMAIN_LABEL_RE.match(label) for label in name.split("."))
            if len(name) > 253 or not labels_ok:
                self.problem(where, f"{text!r} is not a valid domain name")
            else:
                out.append(name)
        self.fields["dns_search"] = tuple(out)

    def environment(self, at: _At) -> None:
        pairs = self.pairs(at, "environment", bare_ok=False)
        if pairs is None:
            return
        env: dict[str, str] = {}
        for key, value, where in pairs:
            if not ENV_KEY_RE.match(key):
                self.problem(where, f"invalid environment variable name {key!r}", on_key=True)
            elif key in env:
                self.problem(where, f"environment variable {key!r} is set twice", on_key=True)
            elif "{{" in value:
                self.problem(where, _INTERPOLATION)
            else:
                env[key] = value
        self.fields["environment"] = tuple(env.items())

    def mdata(self, at: _At) -> None:
        self.pairs(at, "mdata", bare_ok=True)
        self.unsupported(at, "'mdata' is not supported yet")

    def entrypoint(self, at: _At) -> None:
        argv = self.argv(at)
        if argv is not None:
            self.fields["entrypoint"] = argv

    def command(self, at: _At) -> None:
        argv = self.argv(at)
        if argv is not None:
            self.fields["command"] = argv

    def containerpilot(self, at: _At) -> None:
        if isinstance(at.value, bool):
            self.unsupported(at, "'containerpilot' is not supported yet")
            return
        opts = self.options(at, ("network", "port"), "containerpilot")
        if opts is None:
            return
        if "network" in opts:
            self.string(opts["network"])
        if "port" in opts:
            self.integer(opts["port"], 1, 65535)
        self.unsupported(at, "'containerpilot' is not supported yet")

    def healthchecks(self, at: _At) -> None:
        checks = self.list_of(at, "health check mappings")
        if checks is None:
            return
        built = []
        for check in checks:
            if not isinstance(check.value, Mapping):
                self.wrong_type(check, "a health check mapping")
                continue
            hc = self.healthcheck(check)
            if hc is not None:
                built.append(hc)
        self.fields["healthchecks"] = tuple(built)

    def seconds(self, at: _At, positive: bool) -> float | None:
        value = at.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.wrong_type(at, "a number of seconds")
            return None
        if value < 0 or (positive and value == 0):
            self.problem(at, f"must be {'more than' if positive else 'at least'} 0, got {value:g}")
            return None
        return float(value)

    def status_range(self, at: _At) -> tuple[int, int] | None:
        """200, "200-299" or "2xx"."""
        value = at.value
        if _is_int(value):
            code = int(value)
            lo, hi = code, code
        elif isinstance(value, str) and re.fullmatch(r"\s*[1-5]xx\s*", value):
            lo = int(value.strip()[0]) * 100
            hi = lo + 99
        elif isinstance(value, str) and re.fullmatch(r"\s*\d{3}\s*-\s*\d{3}\s*", value):
            lo, hi = (int(v) for v in value.split("-"))
        else:
            self.wrong_type(at, "a status code, a range like \"200-399\", or \"2xx\"")
            return None
        if not (100 <= lo <= hi <= 599):
            self.problem(at, f"status range {lo}-{hi} is not within 100-599, low to high")
            return None
        return (lo, hi)

    def healthcheck(self, at: _At) -> HealthCheck | None:
        known = ("type", "network", "port", "path", "method", "status", "body", "tls_verify", "poll",
                 "unhealthy_poll", "timeout", "retries", "grace", "command", "user")
        opts = self.options(at, known, "health check") or {}
        failed_before = self.failed
        self.failed = False
        values: dict[str, Any] = {}
        kind = None
        if "type" in opts:
            kind = self.choice(opts["type"], HEALTHCHECK_TYPES, "health check type")
        else:
            self.problem(at, f"a health check needs a 'type' ({', '.join(HEALTHCHECK_TYPES)})")
        values["type"] = kind
        if "port" in opts:
            values["port"] = self.integer(opts["port"], 1, 65535)
        elif kind == "tcp":
            self.problem(at, "a tcp health check needs a 'port'")
        for name in ("poll", "unhealthy_poll", "timeout", "grace"):
            if name in opts:
                values[name] = self.seconds(opts[name], positive=name != "grace")
        if "retries" in opts:
            values["retries"] = self.integer(opts["retries"], 0)
        for name in ("user", "network", "body"):
            if name in opts:
                values[name] = self.string(opts[name])
        if "path" in opts:
            path = self.string(opts["path"])
            if path is not None and not path.startswith("/"):
                self.problem(opts["path"], f"path must start with '/', got {path!r}")
            values["path"] = path
        if "method" in opts:
            values["method"] = self.choice(opts["method"], ("GET", "HEAD", "POST", "OPTIONS"), "HTTP method")
        if "status" in opts:
            values["status"] = self.status_range(opts["status"])
        if "tls_verify" in opts:
            if isinstance(opts["tls_verify"].value, bool):
                values["tls_verify"] = opts["tls_verify"].value
            else:
                self.wrong_type(opts["tls_verify"], "true or false")
        if "command" in opts:
            values["command"] = self.argv(opts["command"])
        elif kind == "command":
            self.problem(at, "a command health check needs a 'command'")
        if kind in ("tcp", "command"):
            for name in ("path", "method", "status", "body", "tls_verify"):
                if name in opts:
                    self.problem(opts[name], f"{name!r} only applies to http and https checks", on_key=True)
        ok = not self.failed
        self.failed = failed_before or self.failed
        if not ok:
            return None
        return HealthCheck(**{k: v for k, v in values.items() if v is not None})

    def restart(self, at: _At) -> None:
        if at.value is False:  # YAML 1.1 reads a bare `no` as false
            policy = "no"
        elif isinstance(at.value, str):
            policy = at.value.strip()
        else:
            self.wrong_type(at, f"one of {', '.join(RESTART_POLICIES)}")
            return
        name, colon, retries = policy.partition(":")
        if name not in RESTART_POLICIES or (colon and name != "on-failure"):
            self.problem(
                at,
                f"unknown restart policy {policy!r}{_did_you_mean(name, RESTART_POLICIES)}"
                f" (expected one of {', '.join(RESTART_POLICIES)}, or on-failure:N)",
            )
        elif colon and not retries.isdigit():
            self.problem(
                at,
                f"invalid restart policy {policy!r}: the retry count after ':' must be"
                " an integer 0 or more",
            )
        else:
            self.fields["restart"] = f"{name}:{int(retries)}" if colon else name

    def stop(self, at: _At) -> None:
        opts = self.options(at, ("timeout", "preservestopped"), "stop")
        if opts is None:
            return
        if "timeout" in opts:
            timeout = self.integer(opts["timeout"])
            if timeout is not None:
                self.fields["stop_timeout"] = timeout
        if "preservestopped" in opts:
            value = self.choice(opts["preservestopped"], PRESERVE_STOPPED, "preservestopped value")
            if value is not None:
                self.fields["preserve_stopped"] = value

    def triggers(self, at: _At) -> None:
        self.unsupported(at, "'triggers' are not supported yet")

    def autoscale(self, at: _At) -> None:
        self.unsupported(at, "'autoscale' is not supported yet")

    def webhooks(self, at: _At) -> None:
        self.unsupported(at, "'webhooks' are not supported yet")

    def schedule(self, at: _At) -> None:
        pass  # depends on service_type, so cross_checks decides

    def min_healthy_time(self, at: _At) -> None:
        value = self.seconds(at, positive=False)
        if value is not None:
            self.fields["min_healthy_time"] = value

    def progress_deadline(self, at: _At) -> None:
        value = self.seconds(at, positive=True)
        if value is not None:
            self.fields["progress_deadline"] = value

    def scale(self, at: _At) -> None:
        value = self.integer(at, 0)
        if value is not None:
            self.fields["scale"] = value


# Names people bring from docker-compose and friends that difflib would not match.
_FAMILIAR_NAMES = {
    "env": "environment",
    "cmd": "command",
    "mem": "memory",
    "mem_limit": "memory",
    "label": "tags",
    "replicas": "scale",
    "healthcheck": "healthchecks",
    "stop_grace_period": "stop",
    "restart_policy": "restart",
}

_OPTIONS: dict[str, Callable[[_ServiceChecks, _At], None]] = {
    "service_type": _ServiceChecks.service_type,
    "compute_type": _ServiceChecks.compute_type,
    "image": _ServiceChecks.image,
    "package": _ServiceChecks.package,
    "memory": _ServiceChecks.memory,
    "labels": _ServiceChecks.tags,
    "tags": _ServiceChecks.tags,
    "affinity": _ServiceChecks.affinity,
    "ports": _ServiceChecks.ports,
    "dns": _ServiceChecks.dns,
    "dns_search": _ServiceChecks.dns_search,
    "environment": _ServiceChecks.environment,
    "mdata": _ServiceChecks.mdata,
    "entrypoint": _ServiceChecks.entrypoint,
    "command": _ServiceChecks.command,
    "containerpilot": _ServiceChecks.containerpilot,
    "healthchecks": _ServiceChecks.healthchecks,
    "restart": _ServiceChecks.restart,
    "stop": _ServiceChecks.stop,
    "triggers": _ServiceChecks.triggers,
    "autoscale": _ServiceChecks.autoscale,
    "webhooks": _ServiceChecks.webhooks,
    "schedule": _ServiceChecks.schedule,
    "scale": _ServiceChecks.scale,
    "min_healthy_time": _ServiceChecks.min_healthy_time,
    "progress_deadline": _ServiceChecks.progress_deadline,
}
