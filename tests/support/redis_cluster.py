"""A private three-master Redis Cluster on free loopback ports, which tests can kill and restart as a whole.

Each node has its own directory, so its `nodes.conf` (and, when persistent, its append-only file) lets it rejoin
the cluster with the same slots after a restart on the same ports. With `replicas`, each master has that many
replicas, and one node can be killed on its own (its replica takes over); with `hosts`, each node runs on a host
of its own (an address and the command prefix that runs a program there: the rehearsal's network namespaces).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NodeHost:
    """Where a node runs: the address it binds, and the prefix that runs a command there."""

    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()

    @property
    def flags(self) -> list[str]:
        """Off loopback, a node without a password must leave protected mode to be reached at all (a private
        network: the rehearsal's)."""
        return [] if self.address == "127.0.0.1" else ["--protected-mode", "no"]


class RedisCluster:
    def __init__(
        self,
        root: Path,
        *,
        persistent: bool = False,
        replicas: int = 0,
        hosts: Sequence[NodeHost] = (),
        node_timeout_ms: int | None = None,
    ) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are not installed; `make system-deps` installs them")
        self.binary, self.cli = binary, cli
        self.root = root
        self.replicas = replicas
        self.nodes = MASTERS * (1 + replicas)
        self.hosts = list(hosts) or [NodeHost()] * self.nodes
        if len(self.hosts) != self.nodes:
            raise ValueError(f"{self.nodes} nodes need {self.nodes} hosts, not {len(self.hosts)}")
        # How long a master may be unreachable before its replica takes over (Redis' default: 15 s).
        self.timeout_flags = [] if node_timeout_ms is None else ["--cluster-node-timeout", str(node_timeout_ms)]
        # The bus port is picked too: the default (port + 10000) may be taken or out of range.
        self.ports = [free_port() for _ in range(self.nodes)]
        self.bus_ports = [free_port() for _ in range(self.nodes)]
        # Persistent nodes survive kill -9 with every write on disk, as a production cluster would.
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.created = False  # once the cluster exists, a restart must rejoin it on the same ports

    @property
    def url(self) -> str:
        """A seed node: the client discovers the others."""
        return f"redis://{self.hosts[0].address}:{self.ports[0]}/0"

    def node(self, index: int) -> redis.Redis:
        return redis.Redis(self.hosts[index].address, self.ports[index], socket_timeout=1, decode_responses=True)

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
                for index in range(self.nodes):  # what the nodes wrote names the ports given up
                    shutil.rmtree(self._node_dir(index), ignore_errors=True)
                self.ports = [free_port() for _ in range(self.nodes)]
                self.bus_ports = [free_port() for _ in range(self.nodes)]
            else:
                self.created = True
                return

    def _command(self, index: int) -> list[str]:
        return [
            *self.hosts[index].prefix,
            self.binary,
            "--port",
            str(self.ports[index]),
            "--cluster-port",
            str(self.bus_ports[index]),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--bind",
            self.hosts[index].address,
            "--save",
            "",
            "--dir",
            str(self._node_dir(index)),
            *self.persistence,
            *self.timeout_flags,
            *self.hosts[index].flags,
        ]

    def _start_nodes(self) -> None:
        created = self.created
        for index in range(self.nodes):
            self._node_dir(index).mkdir(parents=True, exist_ok=True)
            command = self._command(index)
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        for index, process in enumerate(self.processes):
            answers = functools.partial(_answers, self.node(index), process)
            self._wait(answers, deadline, f"node {self.ports[index]} did not start")
        if not created:
            nodes = [f"{host.address}:{port}" for host, port in zip(self.hosts, self.ports, strict=True)]
            subprocess.run(
                [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=READY_WITHIN_SECONDS,
            )
        self._wait(self._cluster_ok, deadline, "the cluster did not reach cluster_state:ok")

    def _cluster_ok(self) -> bool:
        """Every running node sees all slots served, and every replica is in sync with its master."""
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                continue
            with self.node(index) as node:
                info = cast(dict[str, str], node.cluster("INFO"))
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
                role = node.role()
                if role[0] == "slave" and role[3] != "connected":
                    return False
        return True

    def masters(self) -> list[int]:
        """The running nodes that are masters now (a replica that took over included)."""
        running = [index for index, process in enumerate(self.processes) if process.poll() is None]
        masters = []
        for index in running:
            with self.node(index) as node:
                if node.role()[0] == "master":
                    masters.append(index)
        return masters

    def wait_replicated(self, index: int, within: float = READY_WITHIN_SECONDS) -> None:
        """Until every replica of master `index` has what the master wrote: replication is asynchronous, so a write
        the master acknowledged a moment before it died may never reach the replica that takes over (Redis' own
        caveat). WAIT would not do here: it waits for the writes of its own connection only."""
        with self.node(index) as master:
            written = int(cast(dict[str, int], master.info("replication"))["master_repl_offset"])
        replicas = [other for other in range(self.nodes) if other != index and self._replicates(other, index)]
        if not replicas:
            raise AssertionError(f"node {index} has no replica")
        self._wait(
            lambda: all(self._offset(other) >= written for other in replicas),
            time.monotonic() + within,
            f"the replicas of node {index} did not catch up within {within} s",
        )

    def _replicates(self, replica: int, master: int) -> bool:
        with self.node(replica) as node:
            role = node.role()
            return bool(role[0] == "slave" and int(role[2]) == self.ports[master])

    def _offset(self, replica: int) -> int:
        with self.node(replica) as node:
            return int(cast(dict[str, int], node.info("replication"))["slave_repl_offset"])

    def kill_node(self, index: int) -> None:
        """kill -9 one node, as a host that dies."""
        self.processes[index].kill()
        self.processes[index].wait(timeout=10)

    def restart_node(self, index: int) -> None:
        """Start a killed node again: it rejoins from its nodes.conf (a master that lost its slots, as a replica)."""
        self.processes[index] = subprocess.Popen(
            self._command(index), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ok(self, within: float = READY_WITHIN_SECONDS) -> None:
        """Until the running nodes serve every slot again (after a failover, say)."""
        self._wait(self._cluster_ok, time.monotonic() + within, f"the cluster was not ok within {within} s")

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
        return redis.cluster.RedisCluster(host=self.hosts[0].address, port=self.ports[0], decode_responses=True)


def _answers(node: redis.Redis, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:  # it exited: its port was taken (or its files refused it)
        raise NodeDidNotStart(f"node {node.get_connection_kwargs()['port']} exited with {process.returncode}")
    with node:
        return bool(node.ping())
