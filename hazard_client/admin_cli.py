"""`hazard keys ...` and `hazard operators ...`: API keys and operator accounts from the command line.

Both need an operator's credential as --api-key / HAZARD_API_KEY: the server's ADMIN_TOKEN (or, where the server
accepts them, an API key with the `admin` scope). `hazard keys create` prints the new key alone on stdout, so
`export HAZARD_API_KEY=$(hazard keys create ...)` works; it is shown this once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from hazard_client.client import HazardClient
from hazard_client.ingest import UsageError
from hazard_client.models import KeyOut

OK = 0
SCOPES = ("detect", "jobs", "map:read", "admin")
ROLES = ("admin", "inspector", "viewer")
SECONDS_PER_DAY = 86_400


def _admin_client(args: argparse.Namespace) -> HazardClient:
    if not args.api_key:
        raise UsageError(
            f"`hazard {args.command}` needs an operator credential: pass --api-key or set HAZARD_API_KEY "
            "(the server's ADMIN_TOKEN)"
        )
    return HazardClient(args.server, timeout=args.timeout, api_key=args.api_key)


def _say(message: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(message, markup=False)


def _when(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _answer(args: argparse.Namespace, value: Any, message: str) -> None:
    """The record as JSON on stdout with --json, else one line on stderr."""
    if args.json:
        _print_json(value)
    else:
        _say(message)


def _limits(args: argparse.Namespace) -> dict[str, float | int]:
    given = {
        "frames_per_second": args.frames_per_second,
        "sessions_per_minute": args.sessions_per_minute,
        "jobs_in_flight": args.jobs_in_flight,
    }
    return {name: value for name, value in given.items() if value is not None}


def _key_row(key: KeyOut) -> list[str]:
    limits = ", ".join(f"{name} {value:g}" for name, value in key.limits.model_dump(exclude_none=True).items())
    return [key.key_id, key.name, key.tenant, " ".join(key.scopes), key.status, limits or "default",
            _when(key.created_at), _when(key.last_used_at)]  # fmt: skip


def cmd_keys(args: argparse.Namespace) -> int:
    with _admin_client(args) as client:
        if args.action == "create":
            if not args.name or not args.tenant:
                raise UsageError("`hazard keys create` needs --name and --tenant")
            expires_at = time.time() + args.expires_days * SECONDS_PER_DAY if args.expires_days else None
            scopes = args.scope or ["detect"]
            created = client.create_key(args.name, args.tenant, scopes, expires_at=expires_at, limits=_limits(args))
            if args.json:
                _print_json(created.model_dump(mode="json"))
            else:
                print(created.key)
                _say(f"key {created.record.key_id} for tenant {created.record.tenant} ({' '.join(scopes)}): "
                     "shown this once, store it now.")  # fmt: skip
            return OK
        if args.action == "revoke":
            if not args.key_id:
                raise UsageError("`hazard keys revoke` needs the key's id (see `hazard keys list`)")
            revoked = client.revoke_key(args.key_id)
            _answer(args, revoked.model_dump(mode="json"), f"revoked {revoked.key_id}")
            return OK
        listing = client.list_keys(args.tenant)
    if args.json:
        _print_json(listing.model_dump(mode="json"))
        return OK
    table = Table("id", "name", "tenant", "scopes", "status", "limits", "created", "last used", title="API keys")
    for key in listing.keys:
        table.add_row(*_key_row(key))
    Console(soft_wrap=True).print(table)
    return OK


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise UsageError("the two passwords differ")
    return password


def cmd_operators(args: argparse.Namespace) -> int:
    with _admin_client(args) as client:
        if args.action in ("create", "set-role"):
            if not args.name or not args.role:
                raise UsageError(f"`hazard operators {args.action}` needs NAME and --role ({', '.join(ROLES)})")
            if args.action == "create":
                account = client.create_operator(args.name, _new_password(args), args.role)
            else:
                account = client.update_operator(args.name, role=args.role)
            _answer(args, account.model_dump(mode="json"), f"{account.name}: {account.role}")
            return OK
        listing = client.list_operators()
    if args.json:
        _print_json(listing.model_dump(mode="json"))
        return OK
    table = Table("name", "role", "status", "created", "last login", title="operators (besides the built-in admin)")
    for account in listing.operators:
        status = "disabled" if account.disabled else "active"
        table.add_row(account.name, account.role, status, _when(account.created_at), _when(account.last_login_at))
    Console(soft_wrap=True).print(table)
    return OK


def add_admin_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """`parents`: the common options (server, --api-key, timeout) and --json."""
    keys = commands.add_parser(
        "keys",
        parents=parents,
        help="create, list or revoke API keys (operator credential)",
        usage="hazard keys [list | create | revoke ID] [options]",
    )
    keys.add_argument("action", nargs="?", choices=("list", "create", "revoke"), default="list")
    keys.add_argument("key_id", nargs="?", metavar="ID")
    keys.add_argument("--name", help="create: what the key is for")
    keys.add_argument("--tenant", help="create: the fleet or customer it acts for; list: only this tenant's")
    keys.add_argument("--scope", action="append", choices=SCOPES, help="create: repeat for several (default detect)")
    keys.add_argument("--expires-days", type=float, help="create: refused after this many days (default never)")
    keys.add_argument("--frames-per-second", type=float, help="create: the key's frame rate limit")
    keys.add_argument("--sessions-per-minute", type=float, help="create: the key's session creation limit")
    keys.add_argument("--jobs-in-flight", type=int, help="create: the key's unfinished jobs at most")
    keys.set_defaults(run=cmd_keys)

    operators = commands.add_parser(
        "operators",
        parents=parents,
        help="list, create operator accounts or change their role (operator credential)",
        usage="hazard operators [list | create NAME --role ROLE | set-role NAME --role ROLE] [options]",
    )
    operators.add_argument("action", nargs="?", choices=("list", "create", "set-role"), default="list")
    operators.add_argument("name", nargs="?", metavar="NAME")
    operators.add_argument("--role", choices=ROLES)
    operators.add_argument(
        "--password-stdin", action="store_true", help="create: read the password from stdin (else it is asked)"
    )
    operators.set_defaults(run=cmd_operators)
