"""A checker of Nomad job JSON against the structure the HTTP API documents (``POST /v1/jobs``,
"JSON Job Specification"): the keys each object takes, their types, the enumerations, and the
rules between them (Periodic and ParameterizedJob only on batch jobs, no Update on batch).
There is no Nomad binary on this machine, so this is the validator the export tests use;
unknown keys are refused, since Nomad's decoder would silently ignore a misspelt one."""

from __future__ import annotations

from typing import Any

from croniter import croniter

OPERANDS = {"=", "==", "is", "!=", "not", ">", ">=", "<", "<=", "distinct_hosts", "distinct_property", "regexp",
            "set_contains", "set_contains_all", "set_contains_any", "version", "semver", "is_set", "is_not_set"}


def _obj(value: Any, where: str, required: dict[str, Any], optional: dict[str, Any]) -> dict:
    assert isinstance(value, dict), f"{where}: expected an object, got {type(value).__name__}"
    for key in required:
        assert key in value, f"{where}: {key} is required"
    for key, item in value.items():
        spec = required.get(key, optional.get(key))
        assert spec is not None or key in optional, f"{where}: unknown key {key}"
        _check(item, f"{where}.{key}", spec)
    return value


def _check(value: Any, where: str, spec: Any) -> None:
    if spec is None:
        return
    if callable(spec) and not isinstance(spec, type):
        spec(value, where)
    elif isinstance(spec, (tuple, set)):  # an enumeration
        assert value in spec, f"{where}: {value!r} is not one of {spec}"
    elif spec is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer, got {value!r}"
    else:
        assert isinstance(value, spec), f"{where}: expected {spec.__name__}, got {type(value).__name__}"


def list_of(spec: Any) -> Any:
    def check(value: Any, where: str) -> None:
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", spec)
    return check


def map_of_str(value: Any, where: str) -> None:
    assert isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()), \
        f"{where}: expected a map of strings"


def nanos(value: Any, where: str) -> None:
    assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{where}: nanoseconds, got {value!r}"


def constraint(value: Any, where: str) -> None:
    c = _obj(value, where, {"Operand": OPERANDS}, {"LTarget": str, "RTarget": str})
    if c["Operand"] not in ("distinct_hosts", "is_set", "is_not_set"):
        assert c.get("LTarget"), f"{where}: LTarget is required for {c['Operand']}"


def affinity(value: Any, where: str) -> None:
    a = _obj(value, where, {"LTarget": str, "RTarget": str, "Operand": OPERANDS, "Weight": int}, {})
    assert -100 <= a["Weight"] <= 100 and a["Weight"] != 0, f"{where}.Weight: -100..100, not 0"


def port(value: Any, where: str) -> None:
    _obj(value, where, {"Label": str}, {"Value": int, "To": int, "HostNetwork": str})


def network(value: Any, where: str) -> None:
    _obj(value, where, {}, {"Mode": ("bridge", "host", "none"), "ReservedPorts": list_of(port),
                            "DynamicPorts": list_of(port)})


def check(value: Any, where: str) -> None:
    c = _obj(value, where, {"Name": str, "Type": ("http", "tcp", "script", "grpc"), "Interval": nanos,
                            "Timeout": nanos},
             {"Path": str, "Method": str, "Protocol": ("http", "https"), "PortLabel": str, "Command": str,
              "Args": list_of(str), "TaskName": str})
    if c["Type"] == "http":
        assert c.get("Path"), f"{where}: an http check needs a Path"
    if c["Type"] == "script":
        assert c.get("Command"), f"{where}: a script check needs a Command"


def service(value: Any, where: str) -> None:
    _obj(value, where, {"Name": str}, {"Provider": ("consul", "nomad"), "PortLabel": str, "Tags": list_of(str),
                                       "Checks": list_of(check)})


def template(value: Any, where: str) -> None:
    _obj(value, where, {"DestPath": str}, {"EmbeddedTmpl": str, "SourcePath": str, "Envvars": bool,
                                           "ChangeMode": ("restart", "signal", "noop", "script")})


def task(value: Any, where: str) -> None:
    t = _obj(value, where, {"Name": str, "Driver": str, "Config": dict},
             {"Env": map_of_str, "Resources": resources, "KillTimeout": nanos, "KillSignal": str, "User": str,
              "Templates": list_of(template), "Meta": map_of_str})
    if t["Driver"] == "docker":
        assert isinstance(t["Config"].get("image"), str), f"{where}.Config.image is required for docker"


def resources(value: Any, where: str) -> None:
    r = _obj(value, where, {}, {"CPU": int, "MemoryMB": int, "MemoryMaxMB": int})
    assert r.get("CPU", 100) >= 1 and r.get("MemoryMB", 300) >= 10, f"{where}: CPU >= 1 MHz, MemoryMB >= 10"


def update(value: Any, where: str) -> None:
    _obj(value, where, {}, {"MaxParallel": int, "MinHealthyTime": nanos, "HealthyDeadline": nanos,
                            "ProgressDeadline": nanos, "AutoRevert": bool, "Canary": int,
                            "HealthCheck": ("checks", "task_states", "manual")})


def restart(value: Any, where: str) -> None:
    _obj(value, where, {}, {"Attempts": int, "Interval": nanos, "Delay": nanos, "Mode": ("delay", "fail")})


def group(value: Any, where: str) -> None:
    g = _obj(value, where, {"Name": str, "Tasks": list_of(task)},
             {"Count": int, "Constraints": list_of(constraint), "Affinities": list_of(affinity),
              "RestartPolicy": restart, "Networks": list_of(network), "Services": list_of(service),
              "Update": update, "Meta": map_of_str})
    assert g["Tasks"], f"{where}.Tasks: at least one task"
    assert g.get("Count", 1) >= 0, f"{where}.Count: not negative"
    # a group service's port labels name the group network's ports (Nomad refuses the job otherwise)
    labels = {p["Label"] for n in g.get("Networks", []) for p in n.get("ReservedPorts", []) + n.get("DynamicPorts", [])}
    for s in g.get("Services", []):
        for label in [s.get("PortLabel")] + [c.get("PortLabel") for c in s.get("Checks", [])]:
            assert not label or label in labels, f"{where}: port label {label!r} is not a port of the group network"
        for c in s.get("Checks", []):
            if c["Type"] in ("http", "tcp"):
                assert c.get("PortLabel") or s.get("PortLabel"), f"{where}: an {c['Type']} check needs a port label"


def periodic(value: Any, where: str) -> None:
    p = _obj(value, where, {"Spec": str}, {"Enabled": bool, "SpecType": ("cron",), "ProhibitOverlap": bool,
                                           "TimeZone": str})
    assert croniter.is_valid(p["Spec"]), f"{where}.Spec: not a cron expression: {p['Spec']!r}"


def parameterized(value: Any, where: str) -> None:
    _obj(value, where, {}, {"Payload": ("optional", "required", "forbidden"), "MetaRequired": list_of(str),
                            "MetaOptional": list_of(str)})


def check_job(doc: Any) -> None:
    """Raise AssertionError naming the first thing wrong with ``{"Job": {...}}``."""
    _obj(doc, "$", {"Job": dict}, {})
    job = _obj(doc["Job"], "Job", {"ID": str, "TaskGroups": list_of(group)},
               {"Name": str, "Type": ("service", "batch", "system", "sysbatch"), "Datacenters": list_of(str),
                "Namespace": str, "Region": str, "Priority": int, "Meta": map_of_str,
                "Periodic": periodic, "ParameterizedJob": parameterized, "Constraints": list_of(constraint),
                "Update": update})
    assert job["TaskGroups"], "Job.TaskGroups: at least one group"
    kind = job.get("Type", "service")
    if "Periodic" in job or "ParameterizedJob" in job:
        assert kind in ("batch", "sysbatch"), "Job: Periodic and ParameterizedJob need a batch job"
    if kind in ("batch", "sysbatch"):
        assert not any("Update" in g for g in job["TaskGroups"]), "Job: a batch job has no Update"
    names = [g["Name"] for g in job["TaskGroups"]]
    assert len(names) == len(set(names)), "Job.TaskGroups: names must be unique"
