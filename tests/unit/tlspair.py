"""A server and a client TLS context that trust each other (a throwaway CA), for tests of the
remote listener over real TLS on 127.0.0.1."""

from __future__ import annotations

import ssl


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx
