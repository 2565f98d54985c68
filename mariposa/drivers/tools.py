"""Host tools and files, for the drivers and the bridges that call ``ip``, ``lxc-*``, ``qemu-*``."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from mariposa.drivers.base import DriverError, RuntimeUnavailable


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Whole or not at all: a temporary file renamed into place. Blocking."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def run_tool(runtime: str, install: str, *argv: str, check: bool = True, what: str = "") -> tuple[int, str]:
    """One call of a host tool: its exit code and its output (stderr in it). ``runtime`` starts
    every error message; ``install`` says how to get the tool when it is missing."""
    try:
        done = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    except FileNotFoundError:
        raise RuntimeUnavailable(f"{runtime}: {argv[0]} not found: {install}") from None
    out = (done.stdout + done.stderr).decode(errors="replace").strip()
    if check and done.returncode != 0:
        raise DriverError(f"{runtime}: {what or ' '.join(argv[:2])}: {out or f'exit {done.returncode}'}")
    return done.returncode, out
