"""A private three-master Redis Cluster on free loopback ports, which tests can kill and restart as a whole.

Each node has its own directory, so its `nodes.conf` (and, when persistent, its append-only file) lets it rejoin
the cluster with the same slots after a restart on the same ports.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis
import redis.cluster

from tests.support.redis_process import free_port

MASTERS = 3
FIRST_START_ATTEMPTS = 3
READY_WITHIN_SECONDS = 20.0  # a restarted master waits ~2 s before it calls the cluster ok again


class NodeDidNotStart(RuntimeError):
    pass


class RedisCluster:
    def __init__(self, root: Path, *, persistent: bool = False) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are not installed; `make system-deps` installs them")
        self.binary, self.cli = binary, cli
        self.root = root
        # The bus port is picked too: the default (port + 10000) may be taken or out of range.
        self.ports = [free_port() for _ in range(MASTERS)]
        self.bus_ports = [free_port() for _ in range(MASTERS)]
        # Persistent nodes survive kill -9 with every write on disk, as a production cluster would.
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.created = False  # once the cluster exists, a restart must rejoin it on the same ports

    @property
    def url(self) -> str:
        """A seed node: the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _node_dir(self, index: int) -> Path:
        return self.root / f"node-{index}"

    def start(self) -> None:
        """Start every node; the first start creates the cluster, later ones rejoin it from nodes.conf (on the same
        ports). A first start whose node could not take its port (a free port handed out to someone else meanwhile:
        the test's own client connections draw from the same range) starts again on fresh ports."""
        for attempt in range(FIRST_START_ATTEMPTS):
            try:
                self._start_nodes()
            except NodeDidNotStart:
                self.kill()
                if self.created or attempt == FIRST_START_ATTEMPTS - 1:
                    raise
                for index in range(MASTERS):  # what the nodes wrote names the ports given up
                    shutil.rmtree(self._node_dir(index), ignore_errors=True)
                self.ports = [free_port() for _ in range(MASTERS)]
                self.bus_ports = [free_port() for _ in range(MASTERS)]
            else:
                self.created = True
                return

    def _start_nodes(self) -> None:
        created = self.created
        for index, (port, bus_port) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            node_dir = self._node_dir(index)
            node_dir.mkdir(parents=True, exist_ok=True)
            command = [
                self.binary,
                "--port",
                str(port),
                "--cluster-port",
                str(bus_port),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(node_dir),
                *self.persistence,
            ]
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        for port, process in zip(self.ports, self.processes, strict=True):
            self._wait(functools.partial(_answers, port, process), deadline, f"node {port} did not start")
        if not created:
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [self.cli, "--cluster", "create", *nodes, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=READY_WITHIN_SECONDS,
            )
        self._wait(self._cluster_ok, deadline, "the cluster did not reach cluster_state:ok")

    def _cluster_ok(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
                info = cast(dict[str, str], node.cluster("INFO"))
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
        return True

    @staticmethod
    def _wait(condition: Callable[[], bool], deadline: float, message: str) -> None:
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise NodeDidNotStart(message)

    def kill(self) -> None:
        """kill -9 every node, as a whole-cluster outage."""
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)


def _answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:  # it exited: its port was taken (or its files refused it)
        raise NodeDidNotStart(f"node {port} exited with {process.returncode}")
    with redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1) as node:
        return bool(node.ping())
