"""`networks:` and `depends_on:` in compose's spelling.

Networks: every service is on its project's own network (``default``, where services reach each
other by name). A service may also join networks the top-level ``networks:`` declares: one the
project makes (``{shared: {}}``, named PROJECT_shared on the runtime so other projects can join it)
or one that exists already (``{shared: {external: true}}``, or ``{external: true, name: REAL}``).
On those, services of every project reach each other as SERVICE.PROJECT.

Start order: ``depends_on: [db]`` or ``{db: {condition: service_healthy}}``. Names, conditions
and cycles are judged here, with the line and column to fix; the waiting itself is
converge/depends.py's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mariposa.manifest.report import _At, _did_you_mean, _Report
from mariposa.manifest.shapes import _Shapes
from mariposa.model import DEPENDENCY_CONDITIONS, NetworkRef

NETWORK_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
# A runtime's name for an existing network (Docker's own rule, bounded).
RUNTIME_NETWORK_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
DEFAULT_NETWORK = "default"


def top_level_networks(at: _At, report: _Report) -> dict[str, NetworkRef]:
    """The project's declared networks (name -> what it is). Problems go to ``report``."""
    if at.value is None:
        return {}
    if not isinstance(at.value, Mapping):
        report.wrong_type(at, "a mapping of network names to their options (or nothing)")
        return {}
    out: dict[str, NetworkRef] = {}
    for name, entry in at.entries():
        if not isinstance(name, str) or not NETWORK_NAME_RE.fullmatch(name):
            report.add(entry, f"invalid network name {name!r}: letters, digits, '_', '.' and '-', at most 63",
                       on_key=True)
            continue
        if name == DEFAULT_NETWORK:
            report.add(entry, "'default' is the project's own network; it needs no declaration", on_key=True)
            continue
        ref = _declaration(name, entry, report)
        if ref is not None:
            out[name] = ref
    return out


def _declaration(name: str, entry: _At, report: _Report) -> NetworkRef | None:
    if entry.value is None:
        return NetworkRef(name)
    if not isinstance(entry.value, Mapping):
        report.wrong_type(entry, "a mapping of network options (external, name) or nothing")
        return None
    external_at = name_at = None
    ok = True
    for key, option in entry.entries():
        if key == "external":
            external_at = option
        elif key == "name":
            name_at = option
        else:
            hint = _did_you_mean(str(key), ["external", "name"])
            report.add(option, f"unknown network option {key!r}{hint} (a network is external: true "
                       "[with name: REAL_NAME], or the project's own)", on_key=True)
            ok = False
    external = False
    if external_at is not None:
        if not isinstance(external_at.value, bool):
            report.wrong_type(external_at, "true or false")
            return None
        external = external_at.value
    runtime = None
    if name_at is not None:
        if not external:
            report.add(name_at, f"'name' only applies to an external network; the project's own network "
                       f"{name!r} is named PROJECT_{name} on the runtime", on_key=True)
            return None
        if not isinstance(name_at.value, str) or not RUNTIME_NETWORK_RE.fullmatch(name_at.value):
            report.add(name_at, f"invalid network name {name_at.value!r}: letters, digits, '_', '.' and '-'")
            return None
        runtime = name_at.value
    if not ok:
        return None
    return NetworkRef(name, external, (runtime or name) if external else None)


class _NetworkChecks(_Shapes):
    def networks(self, at: _At) -> None:
        if isinstance(at.value, Mapping):
            # compose's long form: names with (for now) no options of their own
            entries = []
            for key, entry in at.entries():
                if entry.value not in (None, {}):
                    self.problem(entry, f"network {key!r}: per-network options (aliases, ipv4_address ...) are "
                                 "not supported; list the network's name only", on_key=True)
                entries.append((key, entry))
        elif isinstance(at.value, list):
            entries = [(item.value, item) for item in at.items()]
        else:
            self.wrong_type(at, "a list of network names")
            return
        declared = self.rules.networks or {}
        refs: list[NetworkRef] = []
        seen: set[str] = set()
        for name, where in entries:
            on_key = isinstance(at.value, Mapping)
            if not isinstance(name, str):
                self.problem(where, f"a network name must be a string, got {name!r}", on_key=on_key)
                continue
            if name in seen:
                self.problem(where, f"network {name!r} is listed twice", on_key=on_key)
                continue
            seen.add(name)
            if name == DEFAULT_NETWORK:
                continue  # always joined: it is how the project's own services find each other
            if name not in declared:
                known = ", ".join(declared) or "none"
                self.problem(where, f"unknown network {name!r}: the top-level 'networks:' declares {known}"
                             f"{_did_you_mean(name, list(declared))}", on_key=on_key)
                continue
            refs.append(declared[name])
        self.fields["networks"] = tuple(refs)

    def depends_on(self, at: _At) -> None:
        pairs: list[tuple[str, str, _At]] = []
        if isinstance(at.value, list):
            for item in at.items():
                if isinstance(item.value, str):
                    pairs.append((item.value, "service_started", item))
                else:
                    self.wrong_type(item, "a service name")
        elif isinstance(at.value, Mapping):
            for name, entry in at.entries():
                condition = self._condition(str(name), entry)
                if condition is not None:
                    pairs.append((str(name), condition, entry))
        else:
            self.wrong_type(at, "a list of service names or a mapping of service names to {condition: ...}")
            return
        services = self.rules.services
        me = self.at.field.rpartition(".")[2]
        out: dict[str, str] = {}
        for name, condition, where in pairs:
            on_key = isinstance(at.value, Mapping)
            if name in out:
                self.problem(where, f"service {name!r} is listed twice", on_key=on_key)
            elif name == me:
                self.problem(where, f"a service cannot depend on itself ({name!r})", on_key=on_key)
            elif services is not None and name not in services:
                self.problem(where, f"unknown service {name!r} in depends_on: the project has "
                             f"{', '.join(services)}{_did_you_mean(name, services)}", on_key=on_key)
            else:
                out[name] = condition
        self.fields["depends_on"] = tuple(out.items())

    def _condition(self, name: str, entry: _At) -> str | None:
        if entry.value is None:
            return "service_started"
        opts = self.options(entry, ("condition",), "depends_on")
        if opts is None:
            return None
        if "condition" not in opts:
            return "service_started"
        return self.choice(opts["condition"], DEPENDENCY_CONDITIONS, "depends_on condition")

    def network_cross_checks(self) -> None:
        if self.fields.get("network_mode") == "host" and "networks" in self.seen:
            self.problem(self.seen["networks"], "'networks' does not apply with network_mode: host", on_key=True)


def dependency_cycle(depends: Mapping[str, tuple[tuple[str, str], ...]]) -> list[str] | None:
    """A cycle of ``depends_on`` as the names along it, first name repeated at the end
    (["web", "api", "web"]); None when there is none. Services in manifest order, so the same
    manifest always names the same cycle. Iterative: a chain of 1,000 services is no recursion."""
    done: set[str] = set()
    for root in depends:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(depends.get(root, ()))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            dep = step[0]
            if dep in on_path:
                return path[path.index(dep):] + [dep]
            if dep in done or dep not in depends:
                continue
            path.append(dep)
            on_path.add(dep)
            stack.append(iter(depends[dep]))
    return None


def depends_on_at(services_at: _At, service: str) -> Any:
    """Where a service's ``depends_on`` is written, to point a cycle at it."""
    for name, at in services_at.entries():
        if name == service and isinstance(at.value, Mapping):
            for key, option in at.entries():
                if key == "depends_on":
                    return option
            return at
    return services_at
