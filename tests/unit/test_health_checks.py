"""The probes against tiny servers on 127.0.0.1, run in the test's own nursery."""

from __future__ import annotations

import functools
import os
import socket
import ssl
import struct

import pytest
import trio

from mariposa.clock import FakeClock
from mariposa.drivers.base import DriverError
from mariposa.health import checks
from mariposa.health.checks import CheckResult, KeepAlive, run_check
from mariposa.model import HealthCheck, Instance

LOCAL = "127.0.0.1"


def instance(address: str | None = LOCAL) -> Instance:
    return Instance(
        id="i1", runtime_id="r1", name="p-web-i1", project_id="p", service="web",
        spec_hash="h", version_id="v", state="running", created=0.0, address=address, compute_type="docker",
    )


def response(status: int = 200, body: bytes = b"ok") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


async def read_request(stream: trio.abc.Stream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def replying(payload: bytes, seen: list[bytes] | None = None):
    async def handler(stream: trio.abc.Stream) -> None:
        try:
            request = await read_request(stream)
            if seen is not None:
                seen.append(request)
            await stream.send_all(payload)
        except trio.BrokenResourceError:
            pass  # e.g. the client refused our certificate
        finally:
            await trio.aclose_forcefully(stream)

    return handler


async def serve(nursery: trio.Nursery, handler, ssl_context: ssl.SSLContext | None = None) -> int:
    if ssl_context is None:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=LOCAL))
        return listeners[0].socket.getsockname()[1]
    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, handler, 0, ssl_context, host=LOCAL, https_compatible=True)
    )
    return listeners[0].transport_listener.socket.getsockname()[1]


def closed_port() -> int:
    s = socket.socket()
    s.bind((LOCAL, 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def check(**kw) -> CheckResult:
    return await run_check(HealthCheck(**kw), instance())


# ---- http ---------------------------------------------------------------------------------------


async def test_http_200_ok_and_request_shape(nursery):
    seen: list[bytes] = []
    port = await serve(nursery, replying(response(200), seen))
    r = await check(type="http", port=port, path="/health")
    assert r.ok, r.detail
    assert r.detail.startswith("HTTP 200 in ") and r.detail.endswith(" ms")
    assert 0 <= r.duration < 5 and r.at > 0
    assert seen[0].startswith(b"GET /health HTTP/1.1\r\n")
    assert f"Host: {LOCAL}:{port}\r\n".encode() in seen[0]
    assert b"User-Agent: mariposa-health\r\n" in seen[0] and b"Connection: close\r\n" in seen[0]


async def test_http_500_fails_with_code(nursery):
    port = await serve(nursery, replying(response(500)))
    r = await check(type="http", port=port)
    assert not r.ok
    assert r.detail == "HTTP 500 (expected 200-399)"


async def test_http_custom_status_range(nursery):
    port = await serve(nursery, replying(response(418)))
    assert (await check(type="http", port=port, status=(400, 499))).ok
    r = await check(type="http", port=port, status=(200, 200))
    assert not r.ok and r.detail == "HTTP 418 (expected 200)"


async def test_http_method_and_host_override(nursery):
    seen: list[bytes] = []
    port = await serve(nursery, replying(response(204, b""), seen))
    r = await run_check(HealthCheck(type="http", port=port, method="HEAD"), instance(None), host=LOCAL)
    assert r.ok, r.detail
    assert seen[0].startswith(b"HEAD / HTTP/1.1\r\n")


async def test_http_body_substring(nursery):
    port = await serve(nursery, replying(response(200, b"status: ready\n")))
    assert (await check(type="http", port=port, body="ready")).ok
    r = await check(type="http", port=port, body="steady")
    assert not r.ok and r.detail == "body lacks 'steady'"


async def test_http_body_past_the_cap_is_not_found(nursery):
    port = await serve(nursery, replying(response(200, b"x" * 70_000 + b"ready")))
    r = await check(type="http", port=port, body="ready")
    assert not r.ok and r.detail == "body lacks 'ready'"


async def test_http_body_chunked_and_split_across_reads(nursery):
    async def handler(stream):
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nrea\r\n")
        await trio.sleep(0.01)
        await stream.send_all(b"2\r\ndy\r\n0\r\n\r\n")
        await stream.aclose()

    port = await serve(nursery, handler)
    assert (await check(type="http", port=port, body="ready")).ok


async def test_http_body_without_length_reads_to_eof(nursery):
    async def handler(stream):
        await read_request(stream)
        await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\nall ")
        await trio.sleep(0.01)
        await stream.send_all(b"ready")
        await stream.aclose()

    port = await serve(nursery, handler)
    assert (await check(type="http", port=port, body="ready")).ok


async def test_http_server_that_never_answers_times_out(nursery):
    async def handler(stream):
        await trio.sleep_forever()

    port = await serve(nursery, handler)
    t0 = trio.current_time()
    r = await check(type="http", port=port, timeout=0.3)
    assert not r.ok and r.detail == "timed out after 0.3 s"
    assert 0.25 <= trio.current_time() - t0 < 1.5


async def test_http_connection_refused():
    r = await check(type="http", port=closed_port())
    assert not r.ok and r.detail == "connection refused"


async def test_http_reset(nursery):
    async def handler(stream):
        await read_request(stream)
        # SO_LINGER 0: close sends RST instead of FIN.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    port = await serve(nursery, handler)
    r = await check(type="http", port=port)
    assert not r.ok and r.detail in ("connection reset", "empty response")


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"", "empty response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed mid-headers"),
        (b"hello there\r\n\r\n", "bad status line: 'hello there'"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line: 'HTTP/1.1 abc OK'"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 20_000, "response headers over 16 KiB"),
    ],
)
async def test_http_bad_responses(nursery, payload, detail):
    port = await serve(nursery, replying(payload))
    r = await check(type="http", port=port)
    assert not r.ok and r.detail == detail


async def test_no_address():
    r = await run_check(HealthCheck(type="http", port=80), instance(None))
    assert not r.ok and r.detail == "instance has no address"


async def test_hostname_goes_through_resolver(nursery):
    port = await serve(nursery, replying(response(200)))
    r = await run_check(HealthCheck(type="http", port=port), instance(None), host="localhost")
    # localhost may resolve to ::1 first; the IPv4 fallback must still find the server
    assert r.ok, r.detail


# ---- https --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server_context() -> ssl.SSLContext:
    import trustme  # a test dependency (pyproject: test extras)
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(LOCAL).configure_cert(ctx)
    return ctx


async def test_https_untrusted_certificate(nursery, tls_server_context):
    port = await serve(nursery, replying(response(200, b"ready")), tls_server_context)
    r = await check(type="https", port=port, body="ready")
    assert not r.ok
    assert r.detail.startswith("TLS: certificate verify failed"), r.detail
    r = await check(type="https", port=port, body="ready", tls_verify=False)
    assert r.ok, r.detail


async def test_https_against_plain_http_server(nursery):
    async def handler(stream):
        await stream.send_all(response(400))  # answers the ClientHello like a plain server would
        await trio.aclose_forcefully(stream)

    port = await serve(nursery, handler)
    r = await check(type="https", port=port, tls_verify=False)
    assert not r.ok and r.detail.startswith("TLS: "), r.detail


# ---- tcp ----------------------------------------------------------------------------------------


async def test_tcp_ok_and_refused(nursery):
    port = await serve(nursery, replying(b""))
    r = await check(type="tcp", port=port)
    assert r.ok and r.detail.startswith("connected in ")
    r = await check(type="tcp", port=closed_port())
    assert not r.ok and r.detail == "connection refused"


# ---- command ------------------------------------------------------------------------------------


def fake_exec(code: int = 0, output: bytes = b"", raises: BaseException | None = None, hang: bool = False):
    calls: list[tuple] = []

    async def exec_fn(inst: Instance, argv: list[str], timeout: float, user: str | None = None) -> tuple[int, bytes]:
        calls.append((argv, timeout) if user is None else (argv, timeout, user))
        if hang:
            await trio.sleep_forever()
        if raises is not None:
            raise raises
        return code, output

    exec_fn.calls = calls  # type: ignore[attr-defined]
    return exec_fn


async def test_command_ok():
    fn = fake_exec(0, b"fine")
    hc = HealthCheck(type="command", command=("pg_isready", "-q"), timeout=2)
    r = await run_check(hc, instance(None), fn)
    assert r.ok and r.detail.startswith("exit code 0")
    assert fn.calls == [(["pg_isready", "-q"], 2)]


async def test_command_runs_as_the_check_s_user():
    fn = fake_exec(0)
    await run_check(HealthCheck(type="command", command=("id",), timeout=2, user="postgres"), instance(None), fn)
    assert fn.calls == [(["id"], 2, "postgres")]


async def test_results_are_stamped_by_the_clock_given():
    clock = FakeClock(start=1234.5)
    r = await run_check(HealthCheck(type="command", command=("x",)), instance(), fake_exec(0), now=clock.now)
    assert r.at == 1234.5  # the monitor passes the daemon's clock: grace periods are judged by it


async def test_command_nonzero_has_one_line_excerpt():
    out = b"line one\n  line two\t" + b"z" * 500
    r = await run_check(HealthCheck(type="command", command=("x",)), instance(), fake_exec(3, out))
    assert not r.ok
    assert r.detail.startswith("exit code 3: line one line two zzz")
    assert "\n" not in r.detail and len(r.detail) == len("exit code 3: ") + 200
    r = await run_check(HealthCheck(type="command", command=("x",)), instance(), fake_exec(1))
    assert r.detail == "exit code 1"


async def test_command_driver_error():
    fn = fake_exec(raises=DriverError("docker: exec in web: container is not running"))
    r = await run_check(HealthCheck(type="command", command=("x",)), instance(), fn)
    assert not r.ok and r.detail == "docker: exec in web: container is not running"


async def test_command_driver_deadline_is_a_timeout():
    r = await run_check(HealthCheck(type="command", command=("x",), timeout=1), instance(),
                        fake_exec(raises=trio.TooSlowError()))
    assert not r.ok and r.detail == "timed out after 1 s"


async def test_command_hanging_times_out():
    t0 = trio.current_time()
    r = await run_check(HealthCheck(type="command", command=("x",), timeout=0.2), instance(),
                        fake_exec(hang=True))
    assert not r.ok and r.detail == "timed out after 0.2 s"
    assert trio.current_time() - t0 < 1


async def test_command_without_exec():
    r = await run_check(HealthCheck(type="command", command=("x",)), instance())
    assert not r.ok and r.detail == "command checks need a driver with exec"


# ---- cancellation -------------------------------------------------------------------------------


async def test_outside_cancellation_propagates(nursery):
    async def handler(stream):
        await trio.sleep_forever()

    port = await serve(nursery, handler)
    cases = [
        (HealthCheck(type="http", port=port, timeout=10), None),
        (HealthCheck(type="command", command=("x",), timeout=10), fake_exec(hang=True)),
    ]
    for hc, fn in cases:
        reached = False
        with trio.move_on_after(0.1) as outer:
            await run_check(hc, instance(), fn)
            reached = True
        assert outer.cancelled_caught and not reached, hc.type


async def test_no_descriptor_leaks(nursery):
    async def silent(stream):
        await trio.sleep(0.05)  # long enough to time the probes out, then the server lets go
        await stream.aclose()

    good = await serve(nursery, replying(response(500)))
    hang = await serve(nursery, silent)
    await check(type="http", port=good)  # warm up lazily created resources
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        await check(type="http", port=good)
        await check(type="http", port=good, body="x")
        await check(type="tcp", port=good)
        await check(type="http", port=closed_port())
        await check(type="http", port=hang, timeout=0.01)
        with trio.move_on_after(0.01):
            await check(type="http", port=hang, timeout=5)
    await trio.sleep(0.2)  # let the servers close their ends
    assert len(os.listdir("/proc/self/fd")) <= before + 2


# ---- kept connections ---------------------------------------------------------------------------


async def _keepalive_server(nursery, behaviour: dict) -> tuple[int, dict]:
    """An HTTP/1.1 server that keeps connections open unless told otherwise; counts accepts."""
    stats = {"accepts": 0, "requests": 0}

    async def handle(stream):
        stats["accepts"] += 1
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    buf += chunk
                _, _, buf = buf.partition(b"\r\n\r\n")
                stats["requests"] += 1
                extra = b"Connection: close\r\n" if behaviour.get("close") else b""
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + extra + b"\r\nready")
                if behaviour.get("close") or behaviour.get("hang_up_after_each"):
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], stats


async def test_kept_connection_serves_many_probes(nursery):
    port, stats = await _keepalive_server(nursery, {})
    keep = KeepAlive()
    check = HealthCheck(type="http", port=port, body="ready", timeout=2)
    for _ in range(5):
        result = await run_check(check, instance(), keep=keep)
        assert result.ok, result.detail
    assert stats == {"accepts": 1, "requests": 5}
    keep.drop()


async def test_kept_connection_closed_by_the_server_is_replaced_at_once(nursery):
    port, stats = await _keepalive_server(nursery, {"hang_up_after_each": True})
    keep = KeepAlive()
    check = HealthCheck(type="http", port=port, timeout=2)
    for _ in range(3):
        await trio.sleep(0.05)  # let the hang-up arrive first
        result = await run_check(check, instance(), keep=keep)
        assert result.ok, result.detail
    assert stats["requests"] == 3 and stats["accepts"] == 3
    keep.drop()


async def test_connection_close_answers_are_not_kept(nursery):
    port, stats = await _keepalive_server(nursery, {"close": True})
    keep = KeepAlive()
    for _ in range(2):
        assert (await run_check(HealthCheck(type="http", port=port, timeout=2), instance(), keep=keep)).ok
    assert keep.sock is None and stats["accepts"] == 2


async def test_kept_connections_are_renewed_after_a_while(nursery, monkeypatch):
    port, stats = await _keepalive_server(nursery, {})
    keep = KeepAlive()
    check = HealthCheck(type="http", port=port, timeout=2)
    assert (await run_check(check, instance(), keep=keep)).ok
    monkeypatch.setattr(checks, "REUSE_FOR", 0.0)
    await trio.sleep(0.01)
    assert (await run_check(check, instance(), keep=keep)).ok
    assert stats["accepts"] == 2  # a fresh connection proves the server still accepts new ones
    keep.drop()


async def test_a_timed_out_probe_drops_its_kept_connection(nursery):
    started = trio.Event()

    async def silent(stream):
        started.set()
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    keep = KeepAlive()
    result = await run_check(HealthCheck(type="http", port=port, timeout=0.3), instance(), keep=keep)
    assert not result.ok and "timed out" in result.detail
    assert keep.sock is None
