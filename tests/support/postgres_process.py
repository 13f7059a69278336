"""A private PostgreSQL server on a free port, which tests can stop and start again (same port, same data).

Never the machine's own server on 5432: `initdb` makes a throwaway cluster in a temporary folder, trusted for
127.0.0.1 only. PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user
(which Debian's package creates) through `runuser`, in a folder outside pytest's tmp tree (that one is 0700 root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.redis_process import free_port

SUPERUSER = "postgres"


def postgres_binary(name: str) -> str:
    """`name` on the PATH, else the newest /usr/lib/postgresql/*/bin (where Debian puts them)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed; scripts/ensure-system-deps.sh installs postgresql")
    return found


class PostgresProcess:
    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="hazard-postgres-"))
        self.data_dir = self.root / "data"
        self.port = free_port()
        if self.as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        # --no-sync and fsync=off: a throwaway cluster needs no durability, and both save seconds.
        self._run(postgres_binary("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        log = str(self.root / "server.log")
        self._run(
            postgres_binary("pg_ctl"), "start", "-w", "-t", "30", "-D", str(self.data_dir), "-l", log, "-o", options
        )

    def postgis_available(self) -> bool:
        """The server's PostGIS extension files are installed (scripts/ensure-system-deps.sh installs them)."""
        version = Path(postgres_binary("initdb")).resolve().parent.parent.name  # /usr/lib/postgresql/N/bin -> N
        return Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists()

    def enable_postgis(self) -> None:
        """PostGIS in template1, so that every database a test creates has it without creating it again (about a
        second each); a database made from template0 has not."""
        psql = postgres_binary("psql")
        self._run(
            psql,
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "template1",
            "-q",
            "-c",
            "CREATE EXTENSION IF NOT EXISTS postgis",
        )

    def stop(self) -> None:
        self._run(postgres_binary("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
