"""``mariposa token create|list|revoke``: the remote API's tokens (control/tokens.py).

``create`` prints the token once, as the last word of its output, so a script takes it with
``| awk '{print $NF}'``; nothing else ever shows it again.
"""

from __future__ import annotations

import click

from mariposa.cli.output import ago, print_json, table

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


@click.group(context_settings=CONTEXT)
def token() -> None:
    """API tokens of the remote API (MARIPOSA_HOST + MARIPOSA_TOKEN)."""


@token.command("create", context_settings=CONTEXT)
@click.option("--user", help="Whose token (default: yours); another user's needs user:admin.")
@click.option("--expires", help="Lifetime: 30d, 12h, 90m (default: never).")
@click.option("--name", help="What it is for (shown by token list).")
@click.pass_obj
def create(state, user: str | None, expires: str | None, name: str | None) -> None:
    """Make a token; it is printed once, as the last word."""
    made = state.client.post("/v1/tokens", {"user": user, "expires": expires, "name": name})
    until = f"expires {_when(made['expires'])}" if made.get("expires") else "does not expire"
    click.echo(f"token {made['id']} for {made['user']} ({until}); shown once, keep it: {made['token']}")


@token.command("list", context_settings=CONTEXT)
@click.option("--user", help="Another user's tokens (needs user:admin; root sees every token).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_tokens(state, user: str | None, as_json: bool) -> None:
    """Tokens: id, user, name, expiry, last use (never the token itself)."""
    rows = state.client.get("/v1/tokens", user=user)
    if as_json:
        print_json(rows)
        return
    table(rows, [("ID", lambda r: r["id"]), ("USER", lambda r: r["user"]), ("NAME", lambda r: r.get("name") or "-"),
                 ("CREATED", lambda r: ago(r["created"])), ("EXPIRES", lambda r: _when(r.get("expires"))),
                 ("LAST USED", lambda r: ago(r.get("last_used"))),
                 ("REVOKED", lambda r: ago(r["revoked"]) if r.get("revoked") else "-")])


@token.command("revoke", context_settings=CONTEXT)
@click.argument("token_id", metavar="ID")
@click.pass_obj
def revoke(state, token_id: str) -> None:
    """Revoke a token: the next request that shows it gets 401."""
    from urllib.parse import quote

    row = state.client.request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")
    click.echo(f"token {row['id']} of {row['user']} revoked")
