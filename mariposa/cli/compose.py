"""The CLI's side of `project import-compose`: read the compose file, its `.env` and the caller's
environment, convert (mariposa/compose/, a pure transformation), and add the project through the
one path every manifest takes (`POST /v1/projects`, as `project add`), so the daemon judges the
generated manifest by the host's rules. Problems in the generated manifest are shown at the
compose file's line and column, with the manifest's own position beside them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mariposa.cli.client import Client
from mariposa.compose import Conversion, convert, dotenv
from mariposa.errors import InvalidManifest, MariposaError, translate
from mariposa.manifest import ManifestError
from mariposa.manifest.env_files import read_beside


def prepare(name: str, compose_file: str, out: str | None, strict: bool) -> tuple[Conversion, dict[str, Any]]:
    """(the conversion, the body `project add` would send). Writes ``out`` unless refused."""
    if compose_file == "-":
        text, filename, base = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        try:
            text, filename, base = Path(compose_file).read_text(), compose_file, Path(compose_file).parent
        except (OSError, UnicodeDecodeError) as exc:
            raise MariposaError(f"cannot read compose file {compose_file}: {getattr(exc, 'strerror', exc)}") from None
    base = base.resolve()
    manifest_dir = Path(out).parent.resolve() if out else base
    try:
        conversion = convert(text, filename, env=_environment(base), compose_dir=str(base),
                             absolute_paths=manifest_dir != base)
    except ManifestError as exc:
        raise translate(exc) from None
    if strict and conversion.unmapped:
        count = len(conversion.unmapped)
        raise InvalidManifest(
            f"{filename}: {count} field{'s' if count != 1 else ''} not mapped (--strict); nothing was added",
            details=[{"file": filename, "line": e.line, "column": e.column, "field": e.path, "message": e.note}
                     for e in conversion.unmapped])
    if out:
        try:
            Path(out).write_text(conversion.text)
        except OSError as exc:
            raise MariposaError(f"cannot write {out}: {exc.strerror}") from None
    body: dict[str, Any] = {"name": name, "manifest": conversion.text, "filename": out or f"{filename} (converted)",
            "base_dir": str(manifest_dir)}
    env_files = read_beside(conversion.text, manifest_dir)
    if env_files:
        body["env_files"] = env_files
    return conversion, body


def _environment(base: Path) -> dict[str, str]:
    """What compose fills ``${VARIABLES}`` from: the caller's environment over the `.env` beside
    the file."""
    try:
        found = dotenv((base / ".env").read_text())
    except (OSError, UnicodeDecodeError):
        found = {}
    return {**found, **os.environ}


def check_here(conversion: Conversion, body: dict[str, Any]) -> None:
    """--dry-run: the generated manifest through the validator here, by its shape (the host's
    policy, bind_roots and allow_privileged, is the daemon's to apply when it is added)."""
    from mariposa.manifest import parse_manifest

    try:
        parse_manifest(body["manifest"], body["filename"], None, True, body.get("env_files"), bind_roots=None,
                       base_dir=body["base_dir"])
    except ManifestError as exc:
        raise at_compose_positions(translate(exc), conversion) from None


def add(client: Client, conversion: Conversion, body: dict[str, Any]) -> dict:
    try:
        return client.post("/v1/projects", body)
    except InvalidManifest as exc:
        raise at_compose_positions(exc, conversion) from None


def at_compose_positions(exc: MariposaError, conversion: Conversion) -> MariposaError:
    """The manifest's problems, each at the compose field it came from."""
    details = []
    for d in exc.details or []:
        origin = conversion.origin(d.get("field") or "") if isinstance(d, dict) else None
        if origin is None:
            details.append(d)
            continue
        where = f"generated manifest {d.get('line')}:{d.get('column')}"
        details.append({**d, "file": conversion.filename, "line": origin[0], "column": origin[1],
                        "message": f"{d.get('message')} ({where})"})
    count = len(details)
    return type(exc)(f"{conversion.filename}: the manifest converted from it was refused ({count} "
                     f"problem{'s' if count != 1 else ''}); nothing was changed", details=details)
