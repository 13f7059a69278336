"""Print the argon2 hash of an operator password, for ADMIN_PASSWORD_HASH: `python -m app.entrypoints.hash_password`."""

from __future__ import annotations

import getpass
import sys

from pwdlib import PasswordHash


def main() -> None:
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("Password: ")
    if not password:
        raise SystemExit("an empty password is not a password")
    print(PasswordHash.recommended().hash(password))


if __name__ == "__main__":
    main()
