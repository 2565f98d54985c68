"""The common request, read and answered without h11.

Nearly every request on the control socket is one recv of a few hundred bytes: a request line, a
handful of headers, no body. h11 spent ~0.2 ms of CPU on each (parsing, validating, its state
machine, then the same for the answer), a third of what a request cost once the store was out
of the way, and in a burst of 500 it is what a newcomer waits behind.

So a request that arrives whole in the connection's first read of a cycle, and is plainly within
the rules, is taken here: ``GET``, ``HEAD``, ``POST``, ``PUT`` or ``DELETE`` of an origin-form
target, HTTP/1.1, exactly one ``Host``, header lines of a token, a colon and visible text, no
``Content-Length``, ``Transfer-Encoding``, ``Expect`` or ``Upgrade``, nothing after the blank
line. Anything else, a body, a partial read, a pipelined request or anything odd, goes to h11 as
before, which keeps every refusal its own. The answer written here is the one h11 writes (status
line, headers, ``Connection: close`` when the client asked to close, chunks for a stream), and
h11's connection is left idle, exactly as after a finished cycle, for the requests that follow.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mariposa.ui.paths import is_dashboard

MAX_HEAD = 8 * 1024  # bigger heads go to h11, which bounds and refuses them
_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|DELETE) (/[\x21-\x7e]*) HTTP/1\.1")
_VISIBLE = rb"[\x21-\x7e\x80-\xff]+"
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:" + _VISIBLE + rb"(?:[ \t]+" + _VISIBLE + rb")*)?)[ \t]*")
_NOT_SIMPLE = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
LAST_CHUNK = b"0\r\n\r\n"


class Head(NamedTuple):
    method: bytes
    target: bytes
    close: bool  # the client said ``Connection: close``
    authorization: bytes | None = None  # the remote listener's credentials (api/remote.py)


def parse(data: bytes) -> Head | None:
    """The request ``data`` holds, whole, if it is a simple one; otherwise None (h11's turn)."""
    if len(data) > MAX_HEAD or not data.endswith(b"\r\n\r\n"):
        return None
    lines = data[:-4].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None or is_dashboard(line[2]):  # it reads cookies and forms: h11's, with every header
        return None
    hosts, close, authorization = 0, False, None
    for raw in lines[1:]:
        header = _HEADER.fullmatch(raw)  # an empty line (a body after the head) fails here too
        if header is None:
            return None
        name = header[1].lower()
        if name in _NOT_SIMPLE:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            close = close or b"close" in (v.strip().lower() for v in header[2].split(b","))
        elif name == b"authorization":
            if authorization is not None:
                return None  # two of them: h11's turn, and the remote listener refuses it
            authorization = header[2]
    if hosts != 1:
        return None
    return Head(line[1], line[2], close, authorization)


def response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += [b"%s: %s\r\n" % header for header in headers]
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a streamed body (none for no data: an empty chunk would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
