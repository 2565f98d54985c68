"""Hypothesis properties of the manifest parser: whatever text it is given, it either returns
a ``ProjectSpec`` or raises ``ManifestError`` whose every problem points at a line and a column
inside the text. Never another exception, never a problem without a position.

The manifests are built as YAML text, valid and broken: options of the right and the wrong
types, unknown keys, shifted indentation, duplicated and deleted lines, stray characters, and
bytes that are no YAML at all."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mariposa.manifest import ManifestError, parse_manifest
from mariposa.model import ProjectSpec
from tests.yamltext import block_yaml

OPTIONS = ["image", "scale", "ports", "environment", "command", "entrypoint", "restart", "healthchecks", "stop",
           "memory", "package", "tags", "labels", "dns", "affinity", "min_healthy_time", "progress_deadline",
           "compute_type", "service_type", "schedule", "env", "replicas", "imgae"]
CHECK_OPTIONS = ["type", "port", "path", "poll", "retries", "timeout", "command", "grace", "status", "method"]

words = st.text("abcdefghijklmnopqrstuvwxyz_-.", min_size=1, max_size=10)
odd_text = st.text(max_size=12)  # any characters: quotes, colons, '#', newlines, control characters
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), words, odd_text,
    st.sampled_from(["busybox", "nginx:1.25", "always", "no", "on-failure:3", "http", "tcp", "command",
                     "512m", "1g", "80", "8080:80/tcp", "10s", "*/5 * * * *", "docker", "continuous", "~", "''"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(words, st.sampled_from(CHECK_OPTIONS)), inner, max_size=4)),
    max_leaves=8)
plausible = {
    "image": st.sampled_from(["busybox", "nginx:1.25", "registry.example/a/b@sha256:" + "a" * 64]),
    "scale": st.integers(-2, 20),
    "ports": st.lists(st.one_of(st.integers(0, 70000), st.sampled_from(["80", "8080:80", "53/udp", "x:y"])), max_size=3),
    "environment": st.dictionaries(words, st.one_of(words, st.integers()), max_size=3),
    "command": st.one_of(words, st.lists(words, max_size=3)),
    "restart": st.sampled_from(["always", "no", "on-failure", "on-failure:2", "unless-stopped", "sometimes"]),
    "healthchecks": st.lists(st.dictionaries(st.sampled_from(CHECK_OPTIONS), scalars, max_size=4), max_size=2),
}
services = st.dictionaries(
    st.one_of(words, odd_text),
    st.one_of(
        st.dictionaries(st.sampled_from(OPTIONS), values, max_size=5).flatmap(
            lambda d: st.fixed_dictionaries({k: plausible.get(k, st.just(v)) for k, v in d.items()})),
        values,
    ),
    max_size=3,
)
documents = st.one_of(
    st.fixed_dictionaries({"services": services}),
    st.fixed_dictionaries({"services": services}, optional={"version": values, "x-extra": values, "service": values}),
    values,
)


def scalar_text(value, plain: bool) -> str:
    if isinstance(value, str):
        return value if plain and value and "\n" not in value else json.dumps(value)
    if isinstance(value, float) and value != value:
        return ".nan"
    return json.dumps(value)


def render(value, plain: bool) -> list[str]:
    """Block-style YAML lines for ``value``; ``plain`` leaves strings unquoted (YAML then
    guesses their types, and some of them are no longer valid)."""

    def leaf(item) -> str:
        return scalar_text(item, plain) if item != {} and item != [] else json.dumps(item)

    return block_yaml(value, lambda k: scalar_text(k, plain), leaf)


@st.composite
def manifest_texts(draw) -> str:
    doc = draw(documents)
    if draw(st.booleans()):
        return json.dumps(doc, allow_nan=True)  # JSON manifests take the same path
    lines = render(doc, plain=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(lines)))
        kind = draw(st.sampled_from(["indent", "dedent", "duplicate", "delete", "insert", "tab"]))
        if not lines:
            kind = "insert"
        at = min(at, len(lines) - 1) if kind != "insert" else at
        if kind == "indent":
            lines[at] = " " * draw(st.integers(1, 5)) + lines[at]
        elif kind == "dedent":
            lines[at] = lines[at].lstrip(" ")
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "delete":
            del lines[at]
        elif kind == "insert":
            lines.insert(at, draw(st.one_of(odd_text, st.sampled_from(["- x", "a: [", "}", "&a x", "*b", "? k", "!!int x"]))))
        else:
            lines[at] = "\t" + lines[at]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


def check(text: str) -> None:
    try:
        spec = parse_manifest(text, "p.yaml")
    except ManifestError as exc:
        assert exc.problems, "a ManifestError must say what is wrong"
        last_line = text.count("\n") + text.count("\r") + 2
        for p in exc.problems:
            assert isinstance(p.line, int) and isinstance(p.column, int), p
            assert 1 <= p.line <= last_line and p.column >= 1, (p, text)
            assert p.file == "p.yaml" and p.message, p
    else:
        assert isinstance(spec, ProjectSpec)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=manifest_texts())
def test_any_manifest_parses_or_says_where_it_is_wrong(text):
    check(text)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_parse_or_say_where_they_are_wrong(raw):
    check(raw.decode("utf-8", errors="surrogateescape"))
    check(raw.decode("latin-1"))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_parses_or_says_where_it_is_wrong(text):
    check(text)


@settings(max_examples=40, deadline=None)
@given(image=st.sampled_from(["busybox", "nginx:1.25"]), scale=st.integers(0, 20), names=st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), min_size=1, max_size=3, unique=True))
def test_well_formed_manifests_parse(image, scale, names):
    text = "services:\n" + "".join(f"  {n}:\n    image: {image}\n    scale: {scale}\n" for n in names)
    spec = parse_manifest(text, "p.yaml")
    assert [s.name for s in spec.services] == names and all(s.image == image for s in spec.services)
