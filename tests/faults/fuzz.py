"""Manifest fuzzing: thousands of manifests, built and broken, through the parser the daemon uses.

Every manifest a client sends or drops in the watched directory goes through one function,
``mariposa.manifest.parse_manifest(text, source, packages)`` (the control layer calls it from
``control/manifests.py`` on a worker thread). Whatever the text, it must either return a
``ProjectSpec`` or raise ``ManifestError`` whose every problem has a line and a column: any other
exception is a 500 with no position, and an input that takes seconds or hundreds of MB is a way
for one client to hurt all the others. So each input is checked for:

- no exception but ``ManifestError``;
- every problem has a 1-based line inside the text (or just past its end) and a column;
- an accepted manifest is plain, finite data (a ``.nan`` duration once reached ``service get``);
- at most ``MAX_SECONDS`` and ``MAX_MB`` of memory.

The inputs come from four generators, in fixed proportions of ``run``'s count:

- ``built``: hypothesis strategies that build whole manifests from the option table
  (``OPTION_VALUES`` has a strategy for every option ``manifest/service.py`` knows, and the test
  suite checks it stays so), each option given right and wrong values, rendered as block YAML
  with any quoting, as flow YAML, or as JSON;
- ``mutated``: the manifests we ship and test (examples/*.yaml, the README's, the unit tests')
  broken by one to three seeded mutations: byte flips, deleted, duplicated and swapped lines,
  wrong indentation, type swaps, huge numbers, unicode, NULs and control characters, anchors and
  aliases, tags (``!!python/object`` and friends), directives, truncation, splices, line endings;
- ``json``: the same corpus as JSON, then mutated the same way plus JSON's own oddities;
- ``hostile``: the inputs an attacker writes on purpose: billion laughs, recursive aliases,
  deep nesting, merge-key tricks, huge numbers in every numeric option, the inputs of issue 11,
  texts just past the bounds checked before the YAML is read (1 MiB, 16 KiB a line) and at the
  scale bound. Mutated texts are cut at 16 KiB (``MAX_MUTATED``): how long a manifest near the
  1 MiB bound takes is ruamel's throughput, a question for that bound, not for each input.

Time is measured per input with ``perf_counter``; an input over the limit is read again and
timed in this thread's CPU time (``thread_time``), which a loaded machine does not stretch: the
parser's cost, not the machine's load (CI shares two cores with other suites, at load 8-14, where
a 0.5 s parse took 1.6 s of wall time). Memory is the
growth of the process's peak RSS (``ru_maxrss``, one system call): it catches an input that
takes 100 MB, and any input that grew the peak by more than ``TRACE_MB`` is measured again under
``tracemalloc`` for its exact peak. Tracing every input would triple the run's time.

``run(examples, seed)`` returns the figures; the same seed gives the same inputs (the digest
in the figures says so), so a long run's failure can be replayed, on the same code: hypothesis
also draws constants from the source it runs, so an edit to mariposa/ changes the built inputs.
"""

from __future__ import annotations

import _thread
import ast
import hashlib
import json
import math
import random
import resource
import secrets
import signal
import threading
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest import limits as manifest_limits
from mariposa.manifest.validate import MAX_SERVICES
from mariposa.model import ProjectSpec
from mariposa.packages import DEFAULT_PACKAGES
from tests.yamltext import block_yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "fuzz.yaml"
MAX_SECONDS = 1.0
MAX_MB = 100.0
# Mutations (a repeat of a line of 14,000 digits) can grow a text to hundreds of KiB, and any
# manifest that large takes seconds to read: ruamel's pure-Python scanner reads 30-100 KB/s. That
# is a question for the size bound (1 MiB), measured on its own, not a finding per mutated input.
MAX_MUTATED = 16 * 1024
TRACE_MB = 10.0  # RSS peak growth past which an input is measured again under tracemalloc
TRACE_EVERY = 25  # and one input in so many is, whatever its growth, so the figure is a measure

# The share of each generator in a run.
SHARES = {"built": 0.35, "mutated": 0.40, "json": 0.10, "hostile": 0.15}

# ---- the corpus: manifests we ship, document and test ---------------------------------------------


def _service_text(body: str, name: str = "web") -> str:
    lines = [line for line in body.strip("\n").splitlines()]
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return f"services:\n  {name}:\n" + "".join(f"    {x[indent:]}\n" for x in lines)


def corpus() -> list[str]:
    """Every manifest text in examples/, the README and the manifest tests: the shapes real users
    write, each a starting point for mutation."""
    texts = [p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))]
    readme = (ROOT / "README.md").read_text()
    for block in readme.split("```yaml\n")[1:]:
        texts.append(block.split("```", 1)[0])
    for test in ("tests/unit/test_manifest.py", "tests/property/test_manifest_properties.py"):
        path = ROOT / test
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                arg = node.args[0].value
                name = getattr(node.func, "id", "")
                if isinstance(arg, str) and name in ("service", "service_problem", "service_text"):
                    texts.append(_service_text(arg))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "services" in node.value:
                if "\n" in node.value or node.value.lstrip().startswith("{"):
                    lines = node.value.splitlines()
                    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
                    texts.append("\n".join(x[indent:] for x in lines).lstrip("\n"))
    seen: set[str] = set()
    return [t for t in texts if t.strip() and not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]


# ---- built: manifests from the option table ------------------------------------------------------

HUGE_DIGITS = ["1" + "0" * 4300, "9" * 5000, "-1" + "0" * 309, "0x" + "f" * 4000, "1e400", "-1e400",
               "0o" + "7" * 3000, "0b" + "1" * 14000, "1_000_000_000_000_000_000_000"]


class Raw(str):
    """Text written into the YAML as it is (a huge number, a tag, an alias), never quoted."""


words = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
odd_text = st.text(max_size=16)  # any code point: quotes, colons, '#', newlines, NUL, surrogates
raw_scalars = st.sampled_from([
    Raw(x) for x in HUGE_DIGITS + [
        ".nan", ".inf", "-.inf", "~", "null", "yes", "no", "on", "off", "y", "n", "0x1F", "0o17", "017",
        "1:30", "1_0", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=", "!!set {a, b}",
        "!!omap [a: 1]", "!!int x", "!!bool maybe", "!!float x", "!!str", "!!null x", "!!timestamp x",
        "!!python/object:os.system", "!!python/object/apply:os.system [true]", "!!python/name:os.system",
        "!custom x", "!<tag:yaml.org,2002:int> 7", "*undefined", "&a x", "{{ .meta.x }}", "'{{ .meta.x }}'",
        "'unterminated", "\"bad \\q escape\"", "|", ">", "[", "{", "- x", "? x", "@x", "`x", "%x",
    ]
])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(), words, odd_text, raw_scalars,
)
any_value = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(words, scalars), inner, max_size=4)),
    max_leaves=10,
)


def _either(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value for the option, sometimes anything at all."""
    return st.one_of(good, good, good, any_value)


numbers = st.one_of(st.integers(-5, 100_000), st.floats(-10, 1e7), raw_scalars)
seconds = st.one_of(st.integers(-2, 400 * 24 * 3600), st.floats(allow_nan=True, allow_infinity=True), raw_scalars)
sizes = st.one_of(st.sampled_from(["512m", "1g", "4M", "1.5GiB", "0", "3m", "1t", "12q", ".5g", "5.g", "1e3m"]),
                  st.integers(-1, 2**50), raw_scalars)
pair_lists = st.one_of(
    st.dictionaries(st.one_of(words, odd_text, st.sampled_from(["io.mariposa.x", "A B", ""])),
                    st.one_of(words, odd_text, st.integers(), st.none(), st.booleans()), max_size=4),
    st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", words, words), words, odd_text,
                       st.dictionaries(words, words, min_size=1, max_size=1)), max_size=4),
)
ports = st.lists(st.one_of(st.integers(-1, 70000), st.sampled_from(
    ["80", "8080:80", "53/udp", "80/sctp", "0:80", "99999:1", "x:y", " 80 ", "1:2:3", "80/", "８０"]), raw_scalars),
    max_size=4)
argv = st.one_of(odd_text, words, st.lists(st.one_of(words, odd_text), max_size=4), st.sampled_from(
    ["sh -c 'echo hi'", "sh -c 'unbalanced", "a \\\n b", "", "\\", "{{ .meta.cmd }}"]))
check_values: dict[str, st.SearchStrategy] = {
    "type": st.sampled_from(["http", "https", "tcp", "command", "udp", "HTTP", ""]),
    "network": words, "port": numbers, "path": st.sampled_from(["/", "/health", "health", "", "/é"]),
    "method": st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "PUT", "get"]),
    "status": st.one_of(st.sampled_from(["200-399", "2xx", "6xx", "399-200", "200 - 299", "0-999"]), numbers),
    "body": odd_text, "tls_verify": st.one_of(st.booleans(), words), "poll": seconds, "unhealthy_poll": seconds,
    "timeout": seconds, "retries": numbers, "grace": seconds, "command": argv, "user": words,
}
healthcheck = st.dictionaries(st.one_of(st.sampled_from(sorted(check_values)), words),
                              st.none(), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: _either(check_values.get(k, any_value)) for k in keys}))
one_key_maps = st.lists  # the spec writes stop: and containerpilot: as lists of one-key maps too

_crons = st.one_of(st.sampled_from([
    "30 2 * * *", "*/5 * * * * *", "0 0 32 * *", "61 * * * *", "* * *", "@daily", "@every", "0 0 * jan-mar mon",
    "5-1 * * * *", "*/0 * * * *", "R/2026-01-01T00:00:00Z/PT15M", "R5/2026-01-01T00:00:00/P1D", "R/x/PT1M",
    "R/2026-01-01T00:00:00Z/P1M", "R/2026-01-01T00:00:00Z/PT0S", "0 0 L * *", "0 0 * * 5#3", "* * * * * * *",
]), words)
_durations = st.one_of(st.sampled_from(["5m", "1h", "1h30m", "90s", "2d", "0s", "-5m", "5 minutes", "1e400", ""]),
                       numbers, st.booleans())
# outgoing webhooks (issue 17, manifest/webhooks.py): of a service, and the project's top-level key
webhook_lists = st.one_of(st.lists(st.one_of(st.fixed_dictionaries({}, optional={
    "url": st.one_of(st.sampled_from(["http://127.0.0.1:9000/hook", "https://h.example/a", "ftp://x/y", "http://",
                                      "http://u:p@h/", "http://h:99999/", "h.example/a", "", "http://a b/",
                                      "http://h/" + "x" * 3000, "http://[::1/"]), numbers),
    "events": st.one_of(st.lists(st.sampled_from(["start", "stop", "health", "down", "rollout_failed", "autoscale",
                                                  "run_failed", "helth", "", "Start"]), max_size=4), words),
    "secret_from": st.one_of(st.sampled_from(["webhook_secret", "a/b", "", "x" * 200]), numbers)}), words),
    max_size=3), words, numbers)

OPTION_VALUES: dict[str, st.SearchStrategy] = {
    "service_type": st.sampled_from(["continuous", "scheduled", "event", "cron", "Continuous"]),
    "compute_type": st.sampled_from(["docker", "lx", "infrastructure", "smartmachine", "kvm", "vm", "hvm",
                                     "manta", "podman"]),
    "image": st.sampled_from(["busybox", "mariposa-example/busybox:latest", "nginx:1.25", "a b", "",
                              "registry.example/a/b@sha256:" + "a" * 64, "/srv/vm/disk.qcow2", "/srv/vm/d.raw"]),
    "package": st.sampled_from(["small", "medium", "large", "xlarge", "smal", "g4-highcpu-512M", ""]),
    "memory": sizes,
    "labels": pair_lists,
    "tags": pair_lists,
    "affinity": st.lists(st.one_of(st.sampled_from(["role==~db", "a==b", "a!=b", "a!=~b", "==", "x=y"]), odd_text),
                         max_size=3),
    "ports": ports,
    "dns": st.lists(st.one_of(st.sampled_from(["1.1.1.1", "::1", "256.0.0.1", "fe80::1%eth0"]), words), max_size=3),
    "dns_search": st.lists(st.one_of(words, st.just("a" * 70 + ".example"), st.just("." * 3)), max_size=3),
    "environment": pair_lists,
    "mdata": pair_lists,
    "entrypoint": argv,
    "command": argv,
    "containerpilot": st.one_of(st.booleans(), st.fixed_dictionaries({}, optional={"network": words, "port": numbers}),
                                st.lists(st.dictionaries(st.sampled_from(["network", "port", "x"]), numbers,
                                                         min_size=1, max_size=1), max_size=3)),
    "healthchecks": st.one_of(st.lists(healthcheck, max_size=3), healthcheck),
    "restart": st.one_of(st.sampled_from(["always", "no", "on-failure", "on-failure:3", "unless-stopped",
                                          "on-failure:²", "on-failure:-1", "on-failure:" + "9" * 12, "always:2",
                                          "on-failure:٣", "sometimes"]), st.booleans()),
    "stop": st.one_of(
        st.fixed_dictionaries({}, optional={"timeout": numbers, "preservestopped": st.sampled_from(
            ["on-failure", "no", "always", "never"])}),
        st.lists(st.dictionaries(st.sampled_from(["timeout", "preservestopped", "signal"]), numbers,
                                 min_size=1, max_size=2), max_size=3)),
    # autoscale (issue 17, manifest/autoscale.py)
    "autoscale": st.one_of(st.fixed_dictionaries({}, optional={
        "enable": st.one_of(st.sampled_from(["notify", "notify-only", "true", "1", "false", "0", "yes", ""]),
                            st.booleans(), numbers),
        "min": numbers, "max": numbers, "retrigger_delay": _durations,
        "notify_email": st.sampled_from(["ops@example.com", ""])}), any_value),
    "webhooks": webhook_lists,
    "scale": numbers,
    "min_healthy_time": seconds,
    "progress_deadline": seconds,
    # docker compose's container options (manifest/container.py), env files and volumes
    "user": st.one_of(st.sampled_from(["nobody", "1000:1000", "a b", "0", ":x", "root:"]), st.integers(-1, 70000)),
    "working_dir": st.sampled_from(["/srv", "srv", "", "/é", "//"]),
    "cap_add": st.lists(st.sampled_from(["NET_ADMIN", "CAP_CHOWN", "sys_admin", "ALL", "NOPE", ""]), max_size=3),
    "cap_drop": st.lists(st.sampled_from(["ALL", "CHOWN", "chown", "x"]), max_size=3),
    "devices": st.lists(st.sampled_from(["/dev/fuse", "/dev/a:/dev/b:rwm", "dev", "/a:/b:x", "/a::r"]), max_size=2),
    "extra_hosts": st.one_of(st.lists(st.sampled_from(["db:10.0.0.1", "v6:::1", "x", "a=1.2.3.4", "b:300.1.1.1"]),
                                      max_size=3), pair_lists),
    "hostname": st.sampled_from(["web", "web_1", "x" * 70, "", "-a"]),
    "read_only": st.one_of(st.booleans(), words),
    "tmpfs": st.one_of(st.sampled_from(["/run", "run"]), st.lists(st.sampled_from(["/tmp:size=1m", "x", "/tmp"]),
                                                                     max_size=3)),
    "shm_size": sizes,
    "sysctls": pair_lists,
    "ulimits": st.one_of(st.dictionaries(st.sampled_from(["nofile", "nproc", "nofiles"]),
                                         st.one_of(numbers, st.fixed_dictionaries(
                                             {}, optional={"soft": numbers, "hard": numbers})), max_size=2), words),
    "stop_signal": st.sampled_from(["SIGINT", "TERM", "SIGFOO", "9", "99", "SIGRTMIN+3", ""]),
    "mdata_signal": st.sampled_from(["SIGHUP", "usr1", "SIGFOO", "0", "64", ""]),
    "init": st.one_of(st.booleans(), words),
    "accel": st.sampled_from(["auto", "kvm", "tcg", "KVM", "hvf", ""]),
    "boot_timeout": st.one_of(numbers, words),
    "machine": st.sampled_from(["microvm", "q35", "pc", "Q35", ""]),
    "disk": sizes,
    "kernel": st.sampled_from(["/boot/vmlinuz", "vmlinuz", "", "/"]),
    "initrd": st.sampled_from(["/boot/initrd.img", "initrd", ""]),
    "cmdline": st.sampled_from(["console=ttyS0", "a\nb", ""]),
    "pull": st.one_of(st.sampled_from(["missing", "always", "never", "if_not_present", "", "Always"]), st.booleans()),
    "network_mode": st.sampled_from(["host", "bridge", "none", "service:x", ""]),
    "endpoint_mode": st.one_of(st.sampled_from(["vip", "dnsrr", "VIP", "dns", "", "ingress"]), st.booleans()),
    "privileged": st.one_of(st.booleans(), words),
    "env_file": st.one_of(words, st.lists(st.one_of(words, st.fixed_dictionaries(
        {}, optional={"path": words, "required": st.one_of(st.booleans(), words)})), max_size=2)),
    "volumes": st.lists(st.one_of(st.sampled_from(["data:/d", "/srv/x:/y:ro", "./c:/c", "x", "a:b:c:d", "/etc:/e",
                                                   "data:/d:rx"]),
                                  st.fixed_dictionaries({}, optional={
                                      "type": st.sampled_from(["volume", "bind", "tmpfs", "nfs"]),
                                      "source": words, "target": st.sampled_from(["/t", "t", ""]),
                                      "read_only": st.one_of(st.booleans(), words), "size": sizes})), max_size=3),
    # networks and start order (manifest/networks.py): names that may or may not be declared
    "networks": st.one_of(st.lists(st.sampled_from(["default", "shared", "ext", "nope", "", "a b"]), max_size=3),
                          st.dictionaries(st.sampled_from(["default", "shared", "x"]),
                                          st.one_of(st.none(), st.fixed_dictionaries({"aliases": words})),
                                          max_size=2), words),
    "depends_on": st.one_of(
        st.lists(st.one_of(st.sampled_from(["web", "db", "api", "x"]), numbers), max_size=3),
        st.dictionaries(st.sampled_from(["web", "db", "api", "x"]), st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"condition": st.sampled_from(["service_started", "service_healthy",
                                                        "service_completed_successfully", ""]),
                          "restart": st.booleans()})), max_size=3), words),
    # meta and secrets (issue 13): templates are in the environment's strategies; these are the options
    "on_meta_change": st.one_of(st.sampled_from(["rolling", "none", "", "Rolling", "restart"]), st.booleans()),
    "secrets": st.one_of(st.lists(st.one_of(st.sampled_from(["db_password", "", "a/b", "..", "x" * 300]), numbers),
                                  max_size=3), words),
    "secret_env": st.one_of(st.booleans(), words),
    # scheduled and event services (issue 16, manifest/scheduling.py)
    "schedule": st.one_of(_crons, st.lists(_crons, max_size=3), numbers),
    "time_zone": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "",
                                            "../etc/passwd", "/etc/localtime", "utc", "Etc/GMT+5"]), words, numbers),
    "concurrency": st.one_of(st.sampled_from(["allow", "forbid", "replace", "queue", "Forbid", ""]), st.booleans()),
    "catch_up": st.one_of(st.sampled_from(["none", "latest", "all", "All", ""]), st.booleans(), numbers),
    "catch_up_limit": numbers,
    "starting_deadline": _durations,
    "timeout": _durations,
    "retries": numbers,
    "history": st.one_of(st.fixed_dictionaries({}, optional={"succeeded": numbers, "failed": numbers,
                                                             "running": numbers}), numbers, words),
    "queue_limit": numbers,
    "on": st.one_of(st.fixed_dictionaries({}, optional={
        "meta": st.one_of(st.lists(st.sampled_from(["color", "", "-x", "a b", "k" * 200, "color"]), max_size=3),
                          words, numbers),
        "schedule": words}), st.lists(words, max_size=2), words, numbers),
    # public triggers (issue 16, manifest/triggers.py)
    "triggers": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["deploy-hook", "up", "a b", "", "x" * 70, "-x"]), numbers),
        "action": st.one_of(st.sampled_from(["run", "start", "stop", "scale", "Run", "explode", ""]), numbers),
        "scale": st.one_of(st.sampled_from(["+1", "-1", "3", "x", "+", "1e3"]), numbers)}),
        # metric triggers (issue 17, manifest/autoscale.py): an entry with a metric
        st.fixed_dictionaries({"name": st.sampled_from(["highcpu", "up", "a b"]), "metric": st.one_of(st.sampled_from(
            ["cpu", "memory", "service.web.cpu", "service.db.memory", "service.x.cpu", "disk", "containerpilot.tps",
             ""]), numbers)}, optional={
            "operator": st.one_of(st.sampled_from([">", ">=", "<", "<=", "==", "", "gt"]), numbers),
            "value": st.one_of(st.sampled_from(["80%", "80", "512m", "150%", "-1%", "%", "1e400", "x"]), numbers,
                               st.floats()),
            "of_limit": st.one_of(st.booleans(), words), "time": _durations,
            "action": st.one_of(st.sampled_from(["increment", "incr", "decrement", "decr", "scale", ""]), numbers),
            "instances": numbers, "source": words}), words), max_size=3),
        words, numbers),
}
top_level_networks = st.one_of(st.dictionaries(st.sampled_from(["shared", "ext", "default", "bad name"]), st.one_of(
    st.none(), st.fixed_dictionaries({}, optional={"external": st.one_of(st.booleans(), words),
                                                   "name": st.sampled_from(["real", "", "a b", "x" * 200]),
                                                   "driver": words})), max_size=3), any_value)
option_names = st.one_of(st.sampled_from(sorted(OPTION_VALUES)), st.sampled_from(
    ["imgae", "env", "replicas", "healthcheck", "scael", "Image", "image "]), words)
service_bodies = st.dictionaries(option_names, st.none(), max_size=8).flatmap(
    lambda keys: st.fixed_dictionaries(
        {k: _either(OPTION_VALUES.get(k, any_value)) for k in keys},
        optional={} if "image" in keys else {"image": OPTION_VALUES["image"]}))
service_names = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), words, odd_text,
                          st.sampled_from(["web", "Web", "a_b", "-x", "x" * 64, "web\n", "٣"]), st.integers())
documents = st.one_of(
    st.fixed_dictionaries({"services": st.dictionaries(service_names, st.one_of(service_bodies, service_bodies,
                                                                                any_value), max_size=4)}),
    st.fixed_dictionaries({"services": st.dictionaries(service_names, service_bodies, max_size=3)},
                          optional={"version": any_value, "service": any_value, "x-extra": any_value,
                                    "networks": top_level_networks, "webhooks": webhook_lists}),
    any_value,
)


def _scalar(value: Any, style: str) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        if style == "plain" and value and "\n" not in value:
            return value
        if style == "single" and "\n" not in value:
            return "'" + value.replace("'", "''") + "'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if value != value else (".inf" if value > 0 else "-.inf")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4000:
        return hex(value)  # Python refuses to write an int of more than 4,300 digits in decimal
    return json.dumps(value)


def render_yaml(value: Any, style: str) -> list[str]:
    """Block YAML lines for ``value``: strings plain (YAML then guesses their types, so some of
    them are no longer valid), single- or double-quoted."""
    return block_yaml(value, lambda k: _scalar(k, style), lambda v: render_flow(v, style))


def render_flow(value: Any, style: str) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k, style)}: {render_flow(v, style)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_flow(v, style) for v in value) + "]"
    return _scalar(value, style)


def render_json(value: Any) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k) if not isinstance(k, str) else k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**4000:
            return float("inf")
        return v

    return json.dumps(plain(value), allow_nan=True, ensure_ascii=False)


@st.composite
def built_manifests(draw: st.DrawFn) -> tuple[str, str]:
    """(kind, text): a manifest built from the option table, rendered one of four ways."""
    doc = draw(documents)
    how = draw(st.sampled_from(["plain", "single", "double", "flow", "json"]))
    if how == "json":
        return "built-json", render_json(doc)
    if how == "flow":
        return "built-flow", render_flow(doc, "double")
    return "built-yaml", "\n".join(render_yaml(doc, how)) + "\n"


# ---- mutated: the corpus, broken ------------------------------------------------------------------

UNICODE = ["\ufeff", "\u2028", "\u2029", "\u0085", "\u200b", "\u202e", "\u0301", "\U0001f98b", "\u00b2", "\uff18",
           "\u0663", "\u00a0", "\u3000", "\ud800", "\udfff", "\uffff", "\ufffe", "é", "ß", "İ", "\U0010ffff"]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\r", "\t"]
TYPE_SWAPS = ["[x]", "[]", "{}", "{a: 1}", "true", "~", "1.5", "'80'", "\"\"", "- x", "2001-12-14", ".nan", "-.inf",
              "!!binary aGk=", "!!set {a}", "12:30:00", "0x1F", "1e400", "|\n  block\n", ">-\n  folded\n"]
TAGS = ["!!python/object:os.system", "!!python/object/apply:os.system [\"true\"]", "!!python/name:os.system",
        "!!python/object/new:object", "!!python/module:os", "!!python/tuple", "!!set", "!!omap", "!!pairs",
        "!!binary", "!!timestamp", "!!int", "!!float", "!!bool", "!!str", "!!null", "!!map", "!!seq", "!!merge",
        "!!value", "!custom", "!", "!<tag:yaml.org,2002:int>", "!<!>", "!e!x"]
DIRECTIVES = ["%YAML 1.1\n---\n", "%YAML 1.2\n---\n", "%YAML 2.0\n---\n", "%YAML 1.1\n%YAML 1.1\n---\n",
              "%TAG ! tag:example.com,2000:\n---\n", "%TAG !e! tag:e,2000:\n---\n", "---\n...\n%YAML 2.0\n---\n",
              "%FOO bar\n---\n", "---\n", "--- !!map\n", "--- |\n", "...\n"]


class Mutator:
    """Seeded mutations of manifest text. Each takes and returns the text; positions are drawn
    from ``self.random`` alone, so one seed gives one sequence of inputs."""

    def __init__(self, rng: random.Random):
        self.random = rng

    def ops(self) -> dict[str, Callable[[str], str]]:
        return {name.removeprefix("op_"): getattr(self, name) for name in dir(self) if name.startswith("op_")}

    # -- helpers
    def _line(self, lines: list[str]) -> int:
        return self.random.randrange(len(lines)) if lines else 0

    def _value_spot(self, text: str) -> int | None:
        """The offset just past a ``key: `` or ``- `` where a value starts, if there is one."""
        spots = [i + 2 for i in range(len(text) - 1) if text[i] in ":-" and text[i + 1] == " "]
        return self.random.choice(spots) if spots else None

    def _insert(self, text: str, what: str) -> str:
        at = self.random.randint(0, len(text))
        return text[:at] + what + text[at:]

    # -- the operators
    def op_flip(self, text: str) -> str:
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(self.random.randint(1, 4)):
            if data:
                data[self.random.randrange(len(data))] ^= 1 << self.random.randrange(8)
        return data.decode("utf-8", self.random.choice(["replace", "surrogateescape", "ignore"]))

    def op_delete_line(self, text: str) -> str:
        lines = text.split("\n")
        del lines[self._line(lines)]
        return "\n".join(lines)

    def op_duplicate_line(self, text: str) -> str:
        lines = text.split("\n")
        at = self._line(lines)
        lines[at:at] = [lines[at]] * self.random.randint(1, 3)
        return "\n".join(lines)

    def op_swap_lines(self, text: str) -> str:
        lines = text.split("\n")
        a, b = self._line(lines), self._line(lines)
        lines[a], lines[b] = lines[b], lines[a]
        return "\n".join(lines)

    def op_indent(self, text: str) -> str:
        lines = text.split("\n")
        at = self._line(lines)
        change = self.random.choice([" ", "  ", "   ", "\t", " \t", "-1", "-2", "-all"])
        if change.startswith("-"):
            cut = len(lines[at]) if change == "-all" else int(change[1:])
            lines[at] = lines[at][min(cut, len(lines[at]) - len(lines[at].lstrip(" "))):]
        else:
            for i in range(at, min(len(lines), at + self.random.randint(1, 4))):
                lines[i] = change + lines[i]
        return "\n".join(lines)

    def op_type_swap(self, text: str) -> str:
        at = self._value_spot(text)
        if at is None:
            return text
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        return text[:at] + self.random.choice(TYPE_SWAPS + HUGE_DIGITS) + text[end:]

    def op_huge_number(self, text: str) -> str:
        digits = [i for i, c in enumerate(text) if c.isdigit() and (i == 0 or not text[i - 1].isdigit())]
        at = self.random.choice(digits) if digits else self._value_spot(text)
        if at is None:
            return text
        end = at
        while end < len(text) and text[end].isdigit():
            end += 1
        return text[:at] + self.random.choice(HUGE_DIGITS) + text[end:]

    def op_unicode(self, text: str) -> str:
        for _ in range(self.random.randint(1, 3)):
            text = self._insert(text, self.random.choice(UNICODE))
        return text

    def op_control(self, text: str) -> str:
        return self._insert(text, self.random.choice(CONTROLS) * self.random.randint(1, 3))

    def op_anchor_alias(self, text: str) -> str:
        first, second = self._value_spot(text), self._value_spot(text)
        if first is None or second is None:
            return text
        kind = self.random.choice(["pair", "undefined", "twice", "merge"])
        if kind == "undefined":
            return text[:second] + "*nowhere " + text[second:]
        marks = [(first, "&fz "), (second, "*fz\n" if kind != "merge" else "\n<<: *fz\n")]
        if kind == "twice":
            marks.append((second, "&fz "))
        for at, what in sorted(marks, reverse=True):
            text = text[:at] + what + text[at:]
        return text

    def op_tag(self, text: str) -> str:
        at = self._value_spot(text)
        if at is None:
            return self.random.choice(TAGS) + " " + text
        return text[:at] + self.random.choice(TAGS) + " " + text[at:]

    def op_directive(self, text: str) -> str:
        where = self.random.choice(["start", "end", "middle"])
        what = self.random.choice(DIRECTIVES)
        if where == "start":
            return what + text
        if where == "end":
            return text + "\n" + what + text
        return self._insert(text, "\n" + what)

    def op_truncate(self, text: str) -> str:
        return text[: self.random.randint(0, len(text))]

    def op_splice(self, text: str) -> str:
        other = self.random.choice(self.corpus)
        return text[: self.random.randint(0, len(text))] + other[self.random.randint(0, len(other)):]

    def op_line_endings(self, text: str) -> str:
        return text.replace("\n", self.random.choice(["\r\n", "\r", "\n\n", " \n", "\u2028", "\x85"]))

    def op_repeat(self, text: str) -> str:
        lines = text.split("\n")
        a = self._line(lines)
        b = min(len(lines), a + self.random.randint(1, 6))
        lines[b:b] = lines[a:b] * self.random.randint(1, 20)
        return "\n".join(lines)

    def op_key_change(self, text: str) -> str:
        at = self._value_spot(text)
        if at is None or text[at - 2] != ":":
            return text
        start = text.rfind("\n", 0, at) + 1
        key_start = start + len(text[start:at]) - len(text[start:at].lstrip(" -"))
        key = self.random.choice(["? [[a]]\n", "[a, b]", "{a: b}", "<<", "\"\"", "~", "1", "true", "services",
                                  "image", "x" * 70, "é", "a b", "? a"])
        return text[:key_start] + key + text[at - 2:]

    corpus: list[str] = []


def _as_json(text: str, rng: random.Random) -> str | None:
    """A corpus manifest as JSON (the same document), or None if it is not valid YAML."""
    from ruamel.yaml import YAML

    try:
        doc = YAML(typ="safe", pure=True).load(text)
        indent = rng.choice([None, 2])
        return json.dumps(doc, indent=indent, default=str, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    except Exception:
        return None


JSON_ODDITIES = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 5000, "\"\\u0000\"", "\"\\ud800\"", "null",
                 "[" * 70 + "]" * 70, "{\"a\": 1, \"a\": 2}", "\"\\x41\"", "01", "+1", ".5", "[1,]", "{\"a\" 1}",
                 "true", "\"\\uDFFF\\uD800\""]


# ---- hostile: written to hurt -----------------------------------------------------------------------

ISSUE_11 = [  # the inputs issue 11 found raising something other than ManifestError, or taking minutes
    "services:\n  web:\n    image: x\n    restart: on-failure:\u00b2\n",
    "x: !!int x\n",
    "[" * 300 + "]" * 300,
    "services:\n  web:\n    image: x\n    ports: [" + "9" * 4301 + "]\n",
    "services:\n  web:\n    image: x\n    scale: 0x" + "f" * 4000 + "\n",
    "services:\n  web:\n    image: x\n    healthchecks:\n      - type: http\n        status: 0x" + "f" * 4000 + "\n",
    "services:\n  web:\n    image: x\n    min_healthy_time: -1" + "0" * 309 + "\n",
    "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n",
    "a: " + "[" * 248 + "]" * 248 + "\n",
    "? [[a]]\n: 1\n",
    "x: !!bool maybe\n",
    "---\n...\n%YAML 2.0\n---\nx: 1\n",
    "c: &c\n  a: 1\n  w:\n    <<: *c\n",
    "services:\n  web:\n    image: x\n    min_healthy_time: .nan\n    progress_deadline: .inf\n",
    "services:\n  web:\n    image: x\n    scale: 1000000\n",
    "# " + "x" * 16000 + "\n",
]


def laughs(rng: random.Random) -> str:
    depth, width = rng.randint(3, 12), rng.randint(2, 12)
    flow = rng.random() < 0.5
    lines = ["l0: &l0 [x]" if flow else "l0: &l0\n  - x"]
    for i in range(1, depth):
        refs = [f"*l{i - 1}"] * width
        block = f"l{i}: &l{i}\n" + "".join(f"  - {r}\n" for r in refs)
        lines.append(f"l{i}: &l{i} [{', '.join(refs)}]" if flow else block)
    end = rng.choice(["s: *l{d}\ns: 1", "services:\n  web:\n    image: x\n    command: *l{d}",
                      "services: *l{d}", "s: {{<<: *l{d}}}", "services:\n  web:\n    image: x\n    tags: *l{d}\n"
                      "    tags: [a]", "? *l{d}\n: 1"])
    return "\n".join(lines) + "\n" + end.format(d=depth - 1) + "\n"


def nesting(rng: random.Random) -> str:
    depth = rng.choice([rng.randint(60, 70), rng.randint(100, 1000), 5000])
    how = rng.choice(["flow-seq", "flow-map", "block-map", "block-seq", "mixed", "unbalanced"])
    if how == "flow-seq":
        return "services: " + "[" * depth + "]" * depth + "\n"
    if how == "flow-map":
        return "services: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if how == "mixed":
        return "services:\n  web:\n    image: x\n    command: " + "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2)
    if how == "unbalanced":
        return "services: " + rng.choice("[{") * depth + "\n"
    depth = min(depth, 800)  # one indentation step a level: the lines grow with the depth
    if how == "block-map":
        return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "v\n"
    return "".join(" " * i + "-\n" for i in range(depth)) + " " * depth + "x\n"


def recursive(rng: random.Random) -> str:
    return rng.choice([
        "a: &a [*a]\n", "a: &a {x: *a}\n", "services: &s\n  web: *s\n", "a: &a\n  <<: *a\n",
        "services:\n  web: &w\n    image: x\n    command: *w\n", "a: &a [&b [*a, *b]]\n",
        "services:\n  web: &w\n    image: x\n    <<: *w\n", "&a [*a, *a, *a]\n",
    ])


def merges(rng: random.Random) -> str:
    return rng.choice([
        "base: &b {image: x}\nservices:\n  web:\n    <<: [*b, *b]\n",
        "base: &b {image: x}\nservices:\n  web:\n    <<: *b\n    <<: *b\n",
        "services:\n  web:\n    <<: 1\n", "services:\n  web:\n    <<: [1, 2]\n", "services:\n  web:\n    <<:\n",
        "s: &s x\nservices:\n  web:\n    <<: *s\n", "services:\n  <<: {web: {image: x}}\n",
        "b: &b {image: x, scale: 2}\nservices:\n  web:\n    <<: *b\n    scale: 3\n    ports: [80]\n",
        "services:\n  web: {<<: {image: x}, <<: {scale: 2}}\n",
    ])


NUMERIC = ["scale: {n}", "ports: [{n}]", "ports: ['{n}:80']", "memory: {n}", "memory: '{n}m'", "min_healthy_time: {n}",
           "progress_deadline: {n}", "stop: {{timeout: {n}}}", "restart: 'on-failure:{n}'",
           "healthchecks: [{{type: tcp, port: {n}}}]", "healthchecks: [{{type: http, status: {n}}}]",
           "healthchecks: [{{type: http, status: '{n}-{n}'}}]", "healthchecks: [{{type: tcp, port: 80, poll: {n}}}]",
           "healthchecks: [{{type: tcp, port: 80, retries: {n}}}]", "containerpilot: {{port: {n}}}"]


def huge(rng: random.Random) -> str:
    n = rng.choice(HUGE_DIGITS + [".nan", "-.nan", ".inf", "-.inf", "-0", "0", "1e-400", "10001", "-1", "65536",
                                  "31622401", "9" * 19, "2e9", "0x7fffffffffffffff", "1_0", "1:30:00"])
    return "services:\n  web:\n    image: x\n    " + rng.choice(NUMERIC).format(n=n) + "\n"


def odd_names(rng: random.Random) -> str:
    name = rng.choice(["web\n", "\"web\\n\"", "\"web\\0\"", "\"\\ud800\"", "٣", "ＷＥＢ", "web" * 30, "'a/..'", "\"\"",
                       "~", "[a]", "{a: b}", "!!binary aGk=", "2001-12-14", "0x10", "-", "\u202eweb"])
    return f"services:\n  {name}:\n    image: x\n"


def bounds(rng: random.Random) -> str:
    """Texts at and just past the bounds checked before the YAML is built (size, line length,
    written values: libyaml reads to them in a tenth of a second) and at the scale bound."""
    which = rng.choice(["bytes", "line", "scale", "values", "services"])
    if which == "bytes":
        filler = rng.choice(["#" + "x" * 120 + "\n", "\n", " " * 100 + "\n", "- x\n"])
        return "services:\n  web:\n    image: x\n" + filler * (manifest_limits.MAX_BYTES // len(filler) + 1)
    if which == "line":
        return "services:\n  web:\n    image: " + "x" * (manifest_limits.MAX_LINE + rng.choice([-20, 1, 100])) + "\n"
    if which == "values":  # nine values come before the list's items
        items = manifest_limits.MAX_VALUES - 9 + rng.choice([0, 1, 100])
        return "services:\n  web:\n    image: x\n    command:\n" + rng.choice(["    - x\n", "    - [x]\n"]) * items
    if which == "services":
        count = MAX_SERVICES + rng.choice([0, 1])
        return "services:\n" + "".join(f"  web{i}:\n    image: x\n    ports: [{i}:80]\n" for i in range(count))
    return f"services:\n  web:\n    image: x\n    scale: {rng.choice([10_000, 10_001, 2**63, 2**64])}\n"


def json_hostile(rng: random.Random) -> str:
    return rng.choice([
        "[" * 100_000, "[" * 10_000 + "]" * 10_000, '{"services": NaN}', '{"services": {"web": {"image": "x", '
        '"scale": 1e400}}}', '{"services": {"web": {"image": "x", "scale": ' + "9" * 5000 + '}}}',
        '{"services": {"web": {"image": "\\u0000"}}}', '{"services": {"web\\n": {"image": "x"}}}',
        '{"services": {"web": {"image": "x"}, "web": {"image": "y"}}}', "null", "[]", "1", '"services"',
        '{"services": {"web": {"image": "x", "min_healthy_time": Infinity}}}', '{"services": {"\\ud800": {}}}',
    ])


HOSTILE: dict[str, Callable[[random.Random], str]] = {
    "laughs": laughs, "nesting": nesting, "recursive": recursive, "merges": merges, "huge": huge,
    "names": odd_names, "bounds": bounds, "json": json_hostile, "issue-11": lambda rng: rng.choice(ISSUE_11),
}


# ---- checking one input -------------------------------------------------------------------------


@attrs.define
class Failure:
    kind: str
    reason: str
    text: str

    def __str__(self) -> str:
        shown = self.text if len(self.text) <= 300 else self.text[:300] + f"... ({len(self.text):,} chars)"
        return f"[{self.kind}] {self.reason}\n  input: {shown!r}"


class Hang(BaseException):
    """Raised in the main thread by ``Watchdog`` when one input runs past ``HANG_SECONDS``."""


HANG_SECONDS = 30.0


class Watchdog:
    """Stops an input that runs away, so one infinite loop in the parser is one failure in the
    figures instead of a run that never ends. A thread watches the clock and interrupts the main
    thread with SIGUSR1, whose handler raises ``Hang`` between two bytecodes of the parser. Off
    the main thread (where no handler can be set) inputs are not guarded."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.enabled = threading.current_thread() is threading.main_thread()
        self.previous: Any = None

    def __enter__(self) -> Watchdog:
        if self.enabled:
            self.previous = signal.signal(signal.SIGUSR1, self._interrupted)
            threading.Thread(target=self._watch, name="fuzz-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.enabled = False
            signal.signal(signal.SIGUSR1, self.previous)

    def arm(self) -> None:
        self.deadline = time.monotonic() + HANG_SECONDS

    def disarm(self) -> None:
        self.deadline = None

    def _interrupted(self, signum: int, frame: object) -> None:
        if self.deadline is not None:
            self.deadline = None
            raise Hang()

    def _watch(self) -> None:
        while self.enabled:
            time.sleep(0.2)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                _thread.interrupt_main(signal.SIGUSR1)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _parse(text: str) -> ProjectSpec | ManifestError:
    try:
        return parse_manifest(text, SOURCE, DEFAULT_PACKAGES)
    except ManifestError as exc:
        return exc


def _verdict(text: str, result: Any) -> str | None:
    """What is wrong with the parser's answer to ``text``, or None."""
    if isinstance(result, ManifestError):
        if not result.problems:
            return "ManifestError without problems"
        # every line break YAML knows (ruamel counts U+2028 and U+2029 as YAML 1.1 does)
        last_line = sum(text.count(c) for c in ("\n", "\r", "\u2028", "\u2029", "\x85")) + 2
        for p in result.problems:
            if not (isinstance(p.line, int) and isinstance(p.column, int) and 1 <= p.line <= last_line
                    and p.column >= 1):
                return f"problem without a position in the text: {p}"
            if p.file != SOURCE or not p.message:
                return f"problem without its file or message: {p!r}"
        return None
    if not isinstance(result, ProjectSpec):
        return f"returned {type(result).__name__}, not a ProjectSpec"
    try:
        json.dumps(attrs.asdict(result), allow_nan=False, default=str)
    except (ValueError, TypeError) as exc:
        return f"accepted a manifest whose spec is not plain finite data: {exc}"
    return None


class Fuzzer:
    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.counts: Counter[str] = Counter()
        self.failures: list[Failure] = []
        self.problems_without_position = 0
        self.crashes = 0
        self.slowest = (0.0, "")
        self.max_mb = 0.0
        self.accepted = 0
        self.digest = hashlib.sha256()

    def check(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self.digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        rss, peak = _rss_mb(), _peak_mb()
        start = time.perf_counter()
        crash: Exception | None = None
        self.watchdog.arm()
        try:
            result: Any = _parse(text)
        except Exception as exc:  # this is what the fuzzer looks for
            crash = result = exc
        except Hang:
            self.watchdog.disarm()
            self.failures.append(Failure(kind, f"still running after {HANG_SECONDS:g} s: stopped", text))
            self.slowest = max(self.slowest, (HANG_SECONDS, f"[{kind}] {text[:120]!r} ({len(text):,} chars)"))
            return
        self.watchdog.disarm()
        seconds = time.perf_counter() - start
        grown = max(0.0, _peak_mb() - max(rss, peak)) if _peak_mb() > peak else 0.0
        if seconds > MAX_SECONDS:  # a stall of a loaded machine, or the parser? its CPU time says
            seconds = min(seconds, self._timed(text))
        if grown > TRACE_MB or sum(self.counts.values()) % TRACE_EVERY == 0:
            grown = max(grown, self._traced(text))
        if seconds > self.slowest[0]:
            self.slowest = (seconds, f"[{kind}] {text[:120]!r} ({len(text):,} chars)")
        self.max_mb = max(self.max_mb, grown)
        if crash is not None:
            self.crashes += 1
            where = crash.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            line = f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where else ""
            self.failures.append(Failure(kind, f"{type(crash).__name__}: {str(crash)[:200]}{line}", text))
            return
        reason = _verdict(text, result)
        if reason is not None:
            if "position" in reason:
                self.problems_without_position += 1
            self.failures.append(Failure(kind, reason, text))
        elif isinstance(result, ProjectSpec):
            self.accepted += 1
        if seconds > MAX_SECONDS:
            self.failures.append(Failure(kind, f"took {seconds:.2f} s (at most {MAX_SECONDS} s)", text))
        if grown > MAX_MB:
            self.failures.append(Failure(kind, f"took {grown:.0f} MB (at most {MAX_MB:.0f} MB)", text))

    @staticmethod
    def _timed(text: str) -> float:
        start = time.thread_time()
        try:
            _parse(text)
        except Exception:  # reported by the first run
            pass
        return time.thread_time() - start

    @staticmethod
    def _traced(text: str) -> float:
        tracemalloc.start()
        try:
            _parse(text)
        except Exception:  # reported by the first run
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20


def _split(examples: int) -> dict[str, int]:
    counts = {kind: int(examples * share) for kind, share in SHARES.items()}
    counts["mutated"] += examples - sum(counts.values())
    return counts


def _mutated(rng: random.Random, texts: list[str], count: int, json_first: bool) -> Iterator[tuple[str, str]]:
    mutator = Mutator(rng)
    mutator.corpus = texts
    ops = mutator.ops()
    names = sorted(ops)
    for _ in range(count):
        text = rng.choice(texts)
        kind = "mutated"
        if json_first:
            text = _as_json(text, rng) or rng.choice(JSON_ODDITIES)
            kind = "json"
            if rng.random() < 0.3:  # JSON's own oddities, put where a value goes
                at = mutator._value_spot(text.replace("\": ", "\":  ")) or 0
                text = text[:at] + rng.choice(JSON_ODDITIES) + text[at:]
        chosen = [rng.choice(names) for _ in range(rng.choice([1, 1, 2, 3]))]
        for name in chosen:
            text = ops[name](text)[:MAX_MUTATED]
        yield f"{kind}/{'+'.join(chosen)}" if len(chosen) == 1 else f"{kind}/{chosen[0]}+", text


def run(examples: int, seed: int | None = None) -> dict:
    """Fuzz the manifest parser with ``examples`` inputs; the same ``seed`` gives the same inputs.

    Returns the figures: inputs tried (in all, by generator and by mutation or attack), crashes
    (exceptions other than ManifestError), problems without a position, manifests accepted, the
    slowest input's seconds, the largest memory growth in MB, the seconds taken, the seed, a
    digest of the inputs, and the failures themselves (at most 20, as text)."""
    seed = secrets.randbits(32) if seed is None else seed
    rng = random.Random(seed)
    fuzzer = Fuzzer(Watchdog())
    split = _split(examples)
    started = time.perf_counter()
    texts = corpus()

    @settings(max_examples=max(split["built"], 1), database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @hypothesis_seed(seed)
    @given(built_manifests())
    def built(case: tuple[str, str]) -> None:
        fuzzer.check("built/" + case[0].removeprefix("built-"), case[1])

    with warnings.catch_warnings(), fuzzer.watchdog:
        warnings.simplefilter("ignore")  # ruamel warns of reused anchors, and the fuzzer reuses them
        if split["built"]:
            built()
        for kind, text in _mutated(rng, texts, split["mutated"], json_first=False):
            fuzzer.check(kind, text)
        for kind, text in _mutated(rng, texts, split["json"], json_first=True):
            fuzzer.check(kind, text)
        names = sorted(HOSTILE)
        for _ in range(split["hostile"]):
            name = rng.choice(names)
            fuzzer.check(f"hostile/{name}", HOSTILE[name](rng))

    by_kind: Counter[str] = Counter()
    for kind, n in fuzzer.counts.items():
        by_kind[kind.split("/")[0]] += n
    return {
        "inputs": sum(fuzzer.counts.values()),
        "by_kind": dict(sorted(by_kind.items())),
        "by_generator": dict(sorted(fuzzer.counts.items())),
        "crashes": fuzzer.crashes,
        "problems_without_position": fuzzer.problems_without_position,
        "failures": len(fuzzer.failures),
        "accepted": fuzzer.accepted,
        "slowest_seconds": round(fuzzer.slowest[0], 3),
        "slowest_input": fuzzer.slowest[1],
        "max_memory_mb": round(fuzzer.max_mb, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
        "digest": fuzzer.digest.hexdigest()[:16],
        "corpus": len(texts),
        "failure_examples": [str(f) for f in fuzzer.failures[:20]],
    }


if __name__ == "__main__":
    import sys

    figures = run(int(sys.argv[1]) if len(sys.argv) > 1 else 500, int(sys.argv[2]) if len(sys.argv) > 2 else None)
    for failure in figures.pop("failure_examples"):
        print(failure)
    print(json.dumps(figures, indent=2, ensure_ascii=False))
