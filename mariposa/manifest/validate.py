"""Round-trip nodes to a ``ProjectSpec``, reporting every problem in one pass.

Users fix manifests by hand, so one run should list everything that is wrong, each at the spot to
edit: every check records a problem and carries on instead of raising. Options of the spec that
Mariposa cannot honour yet are still parsed and checked first, so that once the shape is right the
only complaint left is an honest "not supported yet" rather than a silent ignore.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mariposa.manifest.autoscale import metric_kind, metric_service
from mariposa.manifest.errors import ManifestError
from mariposa.manifest.networks import dependency_cycle, depends_on_at, top_level_networks
from mariposa.manifest.parse import START, node_pos
from mariposa.manifest.report import SERVICE_NAME_RE, TOP_LEVEL_KEYS, _At, _did_you_mean, _kind, _Report
from mariposa.manifest.rules import Rules
from mariposa.manifest.service import _ServiceChecks
from mariposa.manifest.triggers import trigger_names
from mariposa.manifest.volumes import top_level_volumes
from mariposa.manifest.webhooks import project_webhooks, with_project_webhooks
from mariposa.model import ProjectSpec, ServiceSpec

# ---- the project --------------------------------------------------------------------------------


def validate(doc: Any, filename: str, rules: Rules | None = None) -> ProjectSpec:
    report = _Report(filename)
    services = _project(doc, report, rules or Rules())
    if report.problems or services is None:
        raise ManifestError(report.problems)
    return ProjectSpec(services=tuple(services))


MAX_SERVICES = 1_000  # one project is one application; ten thousand services blocked the loop 2.5 s


def _project(doc: Any, report: _Report, rules: Rules) -> list[ServiceSpec] | None:
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
        elif key == "volumes":
            rules = attrs.evolve(rules, volumes=top_level_volumes(at, report))
        elif key == "networks":
            rules = attrs.evolve(rules, networks=top_level_networks(at, report))
        elif key == "webhooks":
            rules = attrs.evolve(rules, webhooks=project_webhooks(at, report, rules))
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
    if len(services_at.value) > MAX_SERVICES:
        report.add(services_at, f"lists {len(services_at.value):,} services; a project has at most {MAX_SERVICES:,}")
        return None
    rules = attrs.evolve(rules, services=tuple(str(n) for n in services_at.value))
    specs = []
    for name, at in services_at.entries():
        spec = _service(name, at, report, rules)
        if spec is not None:
            specs.append(spec)
    _duplicate_triggers(services_at, report)
    _other_services_limits(services_at, specs, report)
    cycle = dependency_cycle({s.name: s.depends_on for s in specs})
    if cycle:
        report.add(depends_on_at(services_at, cycle[0]), f"depends_on cycle: {' -> '.join(cycle)}", on_key=True)
    return specs


def _duplicate_triggers(services_at: _At, report: _Report) -> None:
    """Trigger names are the project's: ``trigger rotate NAME`` names one with the project alone.
    (Twice in one service is the service's own check.)"""
    owner: dict[str, str] = {}
    for service, at in services_at.entries():
        if not isinstance(at.value, Mapping) or not isinstance(at.value.get("triggers"), list):
            continue
        triggers_at = next(entry for key, entry in at.entries() if key == "triggers")
        mine = set()
        for name, where in trigger_names(triggers_at):
            if name in owner and name not in mine:
                report.add(where, f"trigger name {name!r} is taken by service {owner[name]!r}: trigger names are "
                                  "unique in a project")
            owner.setdefault(name, str(service))
            mine.add(name)


def _other_services_limits(services_at: _At, specs: list[ServiceSpec], report: _Report) -> None:
    """A metric trigger on another service's percentage of a limit (``service.db.memory: 80%``,
    ``of_limit``) needs that service to have the limit; only the project sees both."""
    by_name = {s.name: s for s in specs}
    for spec in specs:
        for trigger in spec.metric_triggers:
            other = by_name.get(metric_service(trigger.metric) or "")
            if other is None:
                continue
            if trigger.of_limit and not other.cpus:
                why = f"of_limit needs a cpu limit, and service {other.name!r} has none: give it a 'package'"
            elif metric_kind(trigger.metric) == "memory" and trigger.value is not None and not other.memory:
                why = (f"a memory percentage is of the memory limit, and service {other.name!r} has none: give it "
                       "'memory' (or a 'package'), or use a size (value: 512m)")
            else:
                continue
            service_at = next(at for key, at in services_at.entries() if key == spec.name)
            triggers_at = next(at for key, at in service_at.entries() if key == "triggers")
            where = next(i for i in triggers_at.items() if isinstance(i.value, Mapping)
                         and i.value.get("name") == trigger.name)
            report.add(where, f"trigger {trigger.name!r}: {why}")


def _service(name: Any, at: _At, report: _Report, rules: Rules) -> ServiceSpec | None:
    ok = True
    if not isinstance(name, str):
        report.add(at, f"service name {name!r} must be a string", on_key=True)
        ok = False
    elif not SERVICE_NAME_RE.fullmatch(name):
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
    fields = _ServiceChecks(report, rules, at).run()
    if not ok or fields is None:
        return None
    if rules.webhooks:
        fields["webhooks"] = with_project_webhooks(fields.get("webhooks", ()), rules.webhooks)
    return ServiceSpec(name=name, **fields)


