"""API tokens and the remote listener's authentication: the token book (constant-time check,
revoked, expired, last use), the failure limit per address, the control area (own tokens for
anyone, another's for user:admin, the token shown once and never again), and the CLI's
certificate pinning and profiles."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from mariposa.access import tokens as book
from mariposa.access.model import AccessState, Binding, User
from mariposa.api import simple
from mariposa.api.remote import Authenticator
from mariposa.cli import pinning, profiles
from mariposa.control import AccessPolicy, Caller
from mariposa.control.tokens import parse_expires
from mariposa.errors import BadRequest, CertificateChanged, Forbidden, NotFound, TooManyFailures, Unauthorized
from tests.unit.conftest import ROOT
from tests.unit.tlspair import ask_once, tls_contexts

ALICE = Caller(transport="tls", user="alice", token="x", address="10.0.0.1")
BOB = Caller(transport="tls", user="bob", token="y", address="10.0.0.2")


def row_of(token_id: str, hashed: str, **more) -> dict:
    return {"id": token_id, "user": "alice", "name": None, "hash": hashed, "created": 1000.0, "expires": None,
            "revoked": None, "last_used": None, "author": "uid=0", **more}


def test_a_token_is_its_id_and_a_secret_and_only_the_secret_s_hash_is_kept():
    token_id, token, hashed = book.new_token()
    assert token.startswith(f"mrp_{token_id}_") and len(token) == 4 + 12 + 1 + 43
    assert book.parse(token) == (token_id, token.split("_", 2)[2])
    assert token.split("_", 2)[2] not in hashed and hashed == book.secret_hash(token.split("_", 2)[2])
    for bad in ("", "mrp_", token + "x", token[:-1], "Bearer " + token, token.replace("mrp", "xyz")):
        assert book.parse(bad) is None


def test_the_book_admits_a_right_token_and_notes_its_use_and_refuses_the_rest_without_repeating_them():
    tokens = book.TokenBook()
    token_id, token, hashed = book.new_token()
    tokens.add(row_of(token_id, hashed))
    assert tokens.check(token, 2000.0)["user"] == "alice"
    assert tokens.used == {token_id: 2000.0}
    other_id, other, _ = book.new_token()
    wrong_secret = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    for bad in (wrong_secret, other, "garbage", ""):
        with pytest.raises(Unauthorized) as raised:
            tokens.check(bad, 2000.0)
        assert "not valid" in raised.value.message
        assert (bad.split("_")[-1] or "@") not in raised.value.message
    tokens.rows[token_id]["expires"] = 3000.0
    assert tokens.check(token, 2999.0)
    with pytest.raises(Unauthorized, match="has expired"):
        tokens.check(token, 3000.0)
    tokens.revoked(token_id, 2500.0)
    with pytest.raises(Unauthorized, match="was revoked"):
        tokens.check(token, 2600.0)
    assert tokens.is_fresh(tokens.rows[token_id], 1000.0 + book.FRESH - 1)
    assert not tokens.is_fresh(tokens.rows[token_id], 1000.0 + book.FRESH)
    tokens.rows[token_id]["revoked"] = None
    tokens.forget_user("alice")
    with pytest.raises(Unauthorized, match="not valid"):
        tokens.check(token, 2600.0)


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45),
                                           ("2w", 14 * 86400), ("3600", 3600), (600, 600), (None, None),
                                           ("never", None)])
def test_expiry_durations(text, seconds):
    assert parse_expires(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30x", "-1", 0, -5, True, [1], "1.5d"])
def test_a_bad_expiry_is_refused(text):
    with pytest.raises(BadRequest, match="expires"):
        parse_expires(text)


async def test_the_authenticator_makes_a_tls_caller_and_limits_failures_per_address(mock_clock):
    mock_clock.autojump_threshold = 0
    tokens = book.TokenBook()
    token_id, token, hashed = book.new_token()
    tokens.add(row_of(token_id, hashed, created=1000.0))
    auth = Authenticator(tokens, lambda: {"alice"}, lambda: 1100.0)
    caller = auth.caller(b"Bearer " + token.encode(), "10.0.0.9")
    assert (caller.transport, caller.user, caller.token, caller.address, caller.fresh) == (
        "tls", "alice", token_id, "10.0.0.9", True)
    assert auth.caller(b"bearer " + token.encode(), "10.0.0.9").user == "alice"  # the scheme is case-blind
    with pytest.raises(Unauthorized, match="Authorization: Bearer"):
        auth.caller(None, "10.0.0.9")
    with pytest.raises(Unauthorized, match="Authorization: Bearer"):
        auth.caller(b"Basic " + token.encode(), "10.0.0.9")
    for _ in range(7):  # with the two above, nine failures
        with pytest.raises(Unauthorized):
            auth.caller(b"Bearer nope", "10.0.0.9")
    with pytest.raises(TooManyFailures) as raised:  # the 10th failure within the minute
        auth.caller(b"Bearer nope", "10.0.0.9")
    assert raised.value.status == 429 and raised.value.retry_after == 60
    with pytest.raises(TooManyFailures):  # a right token too, while the address is refused
        auth.caller(b"Bearer " + token.encode(), "10.0.0.9")
    assert auth.caller(b"Bearer " + token.encode(), "10.0.0.10").user == "alice"  # another address
    await trio.sleep(61)
    assert auth.caller(b"Bearer " + token.encode(), "10.0.0.9").user == "alice"


async def test_a_token_of_a_user_that_is_gone_is_refused():
    tokens = book.TokenBook()
    token_id, token, hashed = book.new_token()
    tokens.add(row_of(token_id, hashed))
    auth = Authenticator(tokens, lambda: set(), lambda: 1100.0)
    with pytest.raises(Unauthorized, match="no longer exists"):
        auth.caller(b"Bearer " + token.encode(), "10.0.0.9")


def test_the_fast_path_keeps_the_authorization_header_and_leaves_two_to_h11():
    head = simple.parse(b"GET /v1/projects HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer abc\r\n\r\n")
    assert head is not None and head.authorization == b"Bearer abc"
    assert simple.parse(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n").authorization is None
    assert simple.parse(b"GET / HTTP/1.1\r\nHost: m\r\nAuthorization: a\r\nauthorization: b\r\n\r\n") is None


def _users(core, *names: str, developer: str | None = None) -> None:
    db = sqlite3.connect(core.ctx.store.path)
    with db:
        for name in names:
            db.execute("INSERT INTO users (name, created) VALUES (?, 0)", [name])
    db.close()
    bindings = [Binding(id="b1", user=developer, effect="grant", org="default", role="developer")] if developer else []
    core.control.policy.state = AccessState.build([User(n) for n in names], [], bindings, ["default"])


async def test_tokens_area_own_tokens_for_anyone_another_s_for_user_admin(core):
    _users(core, "alice", "bob")
    made = await core.control.tokens.create(ALICE, None, "1h", "laptop")
    assert made["user"] == "alice" and made["token"].startswith(f"mrp_{made['id']}_") and "hash" not in made
    assert made["expires"] == pytest.approx(made["created"] + 3600)
    assert core.ctx.tokens.check(made["token"], made["created"] + 1)["id"] == made["id"]
    listed = await core.control.tokens.list(ALICE)
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0] and "hash" not in listed[0]
    assert made["token"] not in repr(listed)
    with pytest.raises(Forbidden, match="user:admin"):
        await core.control.tokens.create(ALICE, "bob")
    with pytest.raises(Forbidden, match="user:admin"):
        await core.control.tokens.list(ALICE, "bob")
    bobs = await core.control.tokens.create(ROOT, "bob", None, "ci")
    assert bobs["expires"] is None
    with pytest.raises(Forbidden, match="user:admin"):
        await core.control.tokens.revoke(ALICE, bobs["id"])
    assert {t["id"] for t in await core.control.tokens.list(ROOT)} == {made["id"], bobs["id"]}
    assert [t["id"] for t in await core.control.tokens.list(BOB)] == [bobs["id"]]
    revoked = await core.control.tokens.revoke(BOB, bobs["id"])
    assert revoked["revoked"] is not None
    with pytest.raises(Unauthorized, match="revoked"):
        core.ctx.tokens.check(bobs["token"], bobs["created"] + 1)
    with pytest.raises(NotFound, match="no user 'carol'"):
        await core.control.tokens.create(ROOT, "carol")
    with pytest.raises(NotFound, match="no token"):
        await core.control.tokens.revoke(ROOT, "000000000000")
    # what the store holds: the hash, never the token
    await core.ctx.tokens.flush()
    db = sqlite3.connect(core.ctx.store.path)
    dump = "\n".join(db.iterdump())
    db.close()
    assert made["token"].split("_", 2)[2] not in dump and book.secret_hash(made["token"].split("_", 2)[2]) in dump
    fresh = book.TokenBook(core.ctx.store)
    await fresh.load()
    assert set(fresh.rows) == {made["id"], bobs["id"]} and fresh.rows[bobs["id"]]["revoked"] is not None
    assert fresh.rows[made["id"]]["last_used"] == made["created"] + 1  # noted in memory, written by flush


async def test_a_remote_developer_is_judged_by_its_bindings(core):
    _users(core, "alice", "bob", developer="alice")
    policy = core.control.policy
    assert isinstance(policy, AccessPolicy)
    await core.control.projects.list(ALICE)
    with pytest.raises(Forbidden, match="user:admin"):
        await core.control.tokens.list(BOB, "alice")


def test_pinning_accepts_new_pins_it_and_refuses_a_changed_one(tmp_path, capsys):
    path = tmp_path / "known_hosts"
    pinning.check("h:8443", "AA:BB", path)
    assert path.read_text() == "h:8443 AA:BB\n" and "pinned the certificate of h:8443" in capsys.readouterr().err
    pinning.check("h:8443", "aa:bb", path)
    pinning.check("other:8443", "CC:DD", path)
    assert capsys.readouterr().err.count("pinned") == 1
    with pytest.raises(CertificateChanged) as raised:
        pinning.check("h:8443", "EE:FF", path)
    message = raised.value.message
    assert f"{path}:1" in message and "AA:BB" in message and "EE:FF" in message and "remove line 1" in message
    assert raised.value.exit_code == 10


def test_hosts_and_profiles(tmp_path, monkeypatch):
    assert profiles.parse_host("https://h.example:9443") == ("h.example", 9443)
    assert profiles.parse_host("h.example") == ("h.example", 8443)
    assert profiles.parse_host("https://[::1]:8443/") == ("::1", 8443)
    for bad in ("http://h:8443", "https://h:x", "https://h:8443/v1", "https://:8443"):
        with pytest.raises(BadRequest):
            profiles.parse_host(bad)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "mariposa").mkdir()
    (tmp_path / "mariposa" / "profiles.toml").write_text(
        '[ci]\nhost = "https://build:8443"\ntoken = "mrp_x"\norg = "web"\n[bad]\nhots = "x"\n')
    remote, defaults = profiles.resolve(None, None, "ci")
    assert remote is not None and defaults == {"org": "web"}
    assert (remote.url, remote.token) == ("https://build:8443", "mrp_x")
    assert "mrp_x" not in repr(remote)
    remote, _ = profiles.resolve("https://other:1", "t2", "ci")  # the options beat the profile
    assert remote is not None and (remote.url, remote.token) == ("https://other:1", "t2")
    remote, _ = profiles.resolve(None, "left-set", "ci")  # a profile's host gets the profile's token only
    assert remote is not None and remote.token == "mrp_x"
    assert profiles.resolve(None, "left-set", None) == (None, {})
    with pytest.raises(BadRequest, match="unknown key 'hots'"):
        profiles.resolve(None, None, "bad")
    with pytest.raises(BadRequest, match=r"no profile 'nope'.*profiles: ci, bad"):
        profiles.resolve(None, None, "nope")


def test_the_listener_s_configuration(tmp_path):
    from mariposa import config

    assert config.load(None, {"listen": "0.0.0.0:8443"}).listen == "0.0.0.0:8443"
    assert config.load(None, {}).listen is None  # off by default
    path = tmp_path / "m.toml"
    path.write_text('listen = "8443"\n')
    with pytest.raises(config.ConfigError, match=r"m.toml:1.*listen must be HOST:PORT"):
        config.load(str(path))
    path.write_text('listen = "127.0.0.1:8443"\ntls_cert = "/etc/c.pem"\n')
    with pytest.raises(config.ConfigError, match="tls_cert and tls_key go together"):
        config.load(str(path))


def test_a_self_signed_certificate_is_made_once_and_kept(tmp_path):
    import ssl

    from cryptography import x509

    from mariposa.api import tls

    cert, key = tls.ensure_self_signed(str(tmp_path), "10.1.2.3")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = tls.fingerprint(cert)
    assert tls.ensure_self_signed(str(tmp_path), "10.1.2.3") == (cert, key) and tls.fingerprint(cert) == first
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert parsed.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert isinstance(tls.server_context(cert, key), ssl.SSLContext)
    assert len(first.split(":")) == 32


async def test_the_remote_listener_drops_a_silent_handshake_and_hangs_up_over_its_cap(monkeypatch):
    """A client that never finishes its TLS hello holds a slot for HANDSHAKE_TIMEOUT only, and a
    newcomer over the connection cap is hung up on at once, while a good client is served."""

    import attrs

    from mariposa.api import remote
    from mariposa.api.router import Response, Router

    monkeypatch.setattr(remote, "HANDSHAKE_TIMEOUT", 0.5)
    monkeypatch.setattr(remote, "LIMITS", attrs.evolve(remote.LIMITS, max_connections=2))
    server_ctx, client_ctx = tls_contexts()
    tokens = book.TokenBook()
    token_id, token, hashed = book.new_token()
    tokens.add(row_of(token_id, hashed))
    router = Router()

    async def pong(req):
        return Response(200, {"you": req.caller.user})

    router.add("GET", "/v1/ping", pong)
    auth = Authenticator(tokens, lambda: {"alice"}, lambda: 1100.0)
    listener, _ = await remote.bind("127.0.0.1:0")
    port = listener.socket.getsockname()[1]

    async def closed_within(stream: trio.SocketStream, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            try:
                return await stream.receive_some(1024) == b""
            except trio.BrokenResourceError:
                return True
        return False

    async def ask() -> bytes:
        return await ask_once(port, client_ctx, b"GET /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                              + token.encode() + b"\r\nConnection: close\r\n\r\n")

    async with trio.open_nursery() as nursery:
        await nursery.start(remote.serve, router, listener, server_ctx, auth)
        connected = trio.current_time()
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        holder = await trio.open_tcp_stream("127.0.0.1", port)
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream("127.0.0.1", port)  # the third: over the cap of 2
        assert await closed_within(extra, 0.4)
        assert await closed_within(silent, 5)  # dropped when its handshake time ran out, not before
        assert trio.current_time() - connected >= 0.45
        await holder.aclose()
        await trio.sleep(0.1)
        answer = await ask()
        assert answer.startswith(b"HTTP/1.1 200") and b'"you":"alice"' in answer.replace(b" ", b"")
        nursery.cancel_scope.cancel()
