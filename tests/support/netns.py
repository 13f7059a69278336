"""Hosts of their own on one machine: a private bridge, and one Linux network namespace per host, each with its
own address on the bridge's /24 (veth pairs). The machine itself is the bridge's first address (the clients' and
the operator's host). Nothing is routed anywhere else: the namespaces have no default route.

Needs root and iproute2 (`ip`). Everything made here is deleted by `Network.down()`, which is safe to call twice
and after a half-made `up()`; the processes in a namespace must be ended first (the caller's).
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass

from tests.support.redis_cluster import NodeHost


class NetworkUnavailable(RuntimeError):
    """No `ip`, or not allowed to make namespaces (not root, or a sandbox without CAP_NET_ADMIN)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """argv run on this host: `ip netns exec` execs it, so the process's pid is the program's own."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def redis_host(self) -> NodeHost:
        return NodeHost(self.address, ("ip", "netns", "exec", self.namespace))


class Network:
    def __init__(self) -> None:
        if shutil.which("ip") is None:
            raise NetworkUnavailable("iproute2 is not installed; `make system-deps` installs it")
        self.tag = f"rh{secrets.token_hex(2)}"  # interface names are at most 15 characters
        self.subnet = _unused_subnet()
        self.bridge = self.tag
        self.address = str(self.subnet.network_address + 1)  # this machine, on the bridge
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []

    def up(self) -> None:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except subprocess.CalledProcessError as exc:
            raise NetworkUnavailable(f"cannot make a bridge: {exc.stderr.decode().strip()}") from exc
        _ip("addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts)
        namespace, link = f"{self.tag}-{name}", f"{self.tag}h{index}"
        host = Host(name, namespace, str(self.subnet.network_address + 2 + index))
        _ip("netns", "add", namespace)
        self.hosts[name] = host
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._links.append(link)
        _ip("link", "set", link, "master", self.bridge, "up")
        _ip("-n", namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def down(self) -> None:
        """Delete every namespace, link and the bridge made here (whatever exists of them)."""
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True, timeout=10)
        for link in [*self._links, self.bridge]:
            subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=10)
        self.hosts.clear()
        self._links.clear()

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist (none after down())."""
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
        found = [line.split()[0] for line in namespaces.splitlines() if line.startswith(self.tag)]
        found += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if self.tag in line]
        return found


def _unused_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address of this machine is in."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    taken = [ipaddress.ip_interface(line.split()[3]).network for line in used.splitlines()]
    while True:
        subnet = ipaddress.IPv4Network(f"10.{secrets.randbelow(56) + 200}.{secrets.randbelow(256)}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
