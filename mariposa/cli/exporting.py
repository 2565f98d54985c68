"""``mariposa export``'s output: files to stdout (with the report on stderr), or into a directory
with ``report.txt`` beside them. The daemon did the export; this only writes what it answered.
A ``--strict`` refusal is an error from the daemon, so nothing reaches here and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

import click


def write(result: dict, out: str | None) -> list[str]:
    """The files written (with --out), or the files printed to stdout (one file as it is; several,
    each after a '==> NAME <==' line, as head(1) shows several files)."""
    files: dict[str, str] = result["files"]
    if out is None:
        if len(files) == 1:
            click.echo(next(iter(files.values())), nl=False)
        else:
            for name, text in files.items():
                click.echo(f"==> {name} <==")
                click.echo(text, nl=not text.endswith("\n"))
        return list(files)
    root = Path(out)
    planned = {(root.resolve() / name).resolve(): text for name, text in
               {**files, "report.txt": result["report"] + "\n"}.items()}
    for path in planned:  # a name from the daemon never leaves DIR; checked before anything is written
        if root.resolve() not in path.parents:
            raise click.ClickException(f"refusing to write {str(path)!r} outside {out}")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in planned.items():
        name = str(path.relative_to(root.resolve()))
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = name.startswith("secrets/") or result.get("with_secret_values")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        written.append(str(path))
    return written
