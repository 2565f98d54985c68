"""The CLI shows what the daemon answered even when the daemon hung up before reading the request:
a refused caller is answered at once (test_socket_access.py), and so is a connection over the cap.
The CLI used to fail its send with EPIPE and say 'cannot reach the daemon' instead."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from mariposa.cli.client import Client
from mariposa.errors import Forbidden

REFUSAL = json.dumps({"error": "forbidden", "message": "permission denied: uid=65534 is not root"}).encode()


def test_an_answer_sent_before_the_request_was_read_is_shown(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def refuse() -> None:
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(REFUSAL), REFUSAL))
        conn.close()  # unread: the client's big body then meets a closed socket

    thread = threading.Thread(target=refuse)
    thread.start()
    try:
        # A body far past the socket buffers, so the send is still going when the daemon hangs up.
        with pytest.raises(Forbidden, match="permission denied: uid=65534 is not root"):
            Client(path, timeout=10).request("POST", "/v1/projects", json={"manifest": "x" * (8 << 20)})
    finally:
        thread.join(timeout=10)
        server.close()
