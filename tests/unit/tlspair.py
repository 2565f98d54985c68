"""A server and a client TLS context that trust each other (a throwaway CA), for tests of the
remote listener over real TLS on 127.0.0.1."""

from __future__ import annotations

import ssl

import trio


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def ask_once(port: int, client_ctx: ssl.SSLContext, request: bytes) -> bytes:
    """Send one whole request over a new TLS connection to 127.0.0.1 and read the answer to the end."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1", https_compatible=True)
    await tls.send_all(request)
    answer = b""
    try:
        while chunk := await tls.receive_some(65536):
            answer += chunk
    except trio.BrokenResourceError:
        pass
    await tcp.aclose()
    return answer
