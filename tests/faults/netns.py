"""A private network of Linux network namespaces for one test: a bridge and hosts on it.

``Network()`` makes a hub namespace holding a bridge, and ``add_host(name)``
makes one namespace per host (an ``aegis`` node, a redis-server, or a client
"side"), joined to the bridge by a veth pair, with one address on a /24 that
this network drew at random. Nothing is added to the root namespace: no
interface, no route, no address.

Addresses come from 127.0.0.0/8 (127.R.S.0/24, R and S random) even though
they sit on veth interfaces: each namespace sets ``route_localnet`` and keeps
only 127.0.0.1/32 on its ``lo``, so 127.R.S.x is routed over the bridge there.
The point is what happens on a mistake: code that talks to a host from the
root namespace (or after the network was torn down) reaches the machine's own
loopback, never a private or public address out on the real network, which
10.x addresses would (the root namespace's default route takes them).

Code that must talk to hosts runs in a thread that entered a host's namespace
(``Host.run`` or ``Host.thread``): a socket belongs to the namespace of the
thread that created it, so a client made there stays there.

Teardown (``close()``) kills every process left in the namespaces by PID,
then deletes the namespaces; ``sweep_stale()`` does the same for the
namespaces of test processes that died without tearing down.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

IP = shutil.which("ip")
NFT = shutil.which("nft")
NETNS_DIR = "/var/run/netns"
PREFIX = "aegf"  # namespace names: aegf<creator pid>x<random>-<host>
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetworkError(RuntimeError):
    """A namespace, link or address could not be set up."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, no ``ip``, no ``nft``), or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if IP is None:
        return "needs iproute2 (ip) for network namespaces"
    if NFT is None:
        return "needs nftables (nft) to cut traffic"
    probe = f"{PREFIX}{os.getpid()}xprobe{secrets.token_hex(2)}"
    created = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return f"ip netns add failed: {created.stderr.strip()}"
    subprocess.run([IP, "netns", "delete", probe], capture_output=True)
    return None


def run(command: Sequence[str], *, input_text: str | None = None) -> str:
    """Run a setup command; its stderr becomes the error."""
    done = subprocess.run(list(command), input=input_text, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def enter_namespace(name: str) -> None:
    """Move the calling thread (only it) into namespace ``name``; sockets it creates belong there."""
    descriptor = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        if _libc.setns(descriptor, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({name}): {os.strerror(error)}")
    finally:
        os.close(descriptor)


def namespace_pids(name: str) -> list[int]:
    listing = subprocess.run([IP or "ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(word) for word in listing.split() if word.isdigit()]


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            # SIGKILL is delivered even to a stopped process; no SIGCONT needed.
        except ProcessLookupError:
            pass


def _delete_namespace(name: str) -> None:
    # Processes inside keep a namespace alive after its name is gone: kill them first.
    for _ in range(50):
        pids = namespace_pids(name)
        if not pids:
            break
        _kill_pids(pids)
        time.sleep(0.02)
    subprocess.run([IP or "ip", "netns", "delete", name], capture_output=True)


def sweep_stale() -> list[str]:
    """Delete the namespaces of earlier test processes that are gone (killed mid-test); returns their names."""
    swept: list[str] = []
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return swept
    for name in names:
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX) :].split("x", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
            continue  # its creator still runs: not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _delete_namespace(name)
        swept.append(name)
    return swept


@dataclass
class Host:
    """One namespace on the network with one address."""

    network: Network
    name: str  # short: "n0", "c0"
    namespace: str
    address: str
    exec_prefix: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.exec_prefix = (IP or "ip", "netns", "exec", self.namespace)

    def run(self, action: Callable[[], T], timeout: float | None = None) -> T:
        """Call ``action`` in a fresh thread inside this namespace; its result or its exception."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def body() -> None:
            try:
                enter_namespace(self.namespace)
                outcome.append(action())
            except BaseException as error:
                failure.append(error)

        worker = threading.Thread(target=body, name=f"in-{self.name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise TimeoutError(f"{action!r} still running in {self.namespace} after {timeout}s")
        if failure:
            raise failure[0]
        return outcome[0]

    def thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A started daemon thread that runs ``target`` inside this namespace."""

        def body() -> None:
            enter_namespace(self.namespace)
            target()

        worker = threading.Thread(target=body, name=name, daemon=True)
        worker.start()
        return worker

    def nft(self, rules: str) -> str:
        """Apply an nftables script in this namespace (``nft -f -``)."""
        return run([*self.exec_prefix, NFT or "nft", "-f", "-"], input_text=rules)

    def nft_command(self, *words: str) -> str:
        return run([*self.exec_prefix, NFT or "nft", *words])


class Network:
    """The hub namespace, its bridge and the hosts; ``close()`` removes all of it."""

    def __init__(self) -> None:
        if IP is None:
            raise NetworkError("ip (iproute2) is not installed")
        sweep_stale()
        self.tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        # 127.R.S.0/24 with R >= 16: clear of 127.0.x.x, which the loopback cluster tests use.
        self.subnet = f"127.{16 + secrets.randbelow(239)}.{secrets.randbelow(256)}"
        self.hub = f"{self.tag}-hub"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._closed = False
        try:
            self._add_namespace(self.hub)
            run([IP, "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            run([IP, "-n", self.hub, "link", "set", "br0", "up"])
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        assert IP is not None
        run([IP, "netns", "add", name])
        self._namespaces.append(name)
        run([IP, "netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"])
        # Only 127.0.0.1 stays local: the rest of 127/8 is routed over the bridge.
        # (Bringing lo up gives it 127.0.0.1/8 whatever it had; replace that.)
        run([IP, "-n", name, "link", "set", "lo", "up"])
        run([IP, "-n", name, "addr", "del", "127.0.0.1/8", "dev", "lo"])
        run([IP, "-n", name, "addr", "add", "127.0.0.1/32", "dev", "lo"])

    def add_host(self, name: str, index: int) -> Host:
        """Namespace ``<tag>-<name>`` with address 127.R.S.<index> (1..254, unique per network)."""
        assert IP is not None
        if not 1 <= index <= 254 or any(host.address.endswith(f".{index}") for host in self.hosts.values()):
            raise ValueError(f"host index {index} is out of range or taken")
        namespace = f"{self.tag}-{name}"
        self._add_namespace(namespace)
        link = f"v{index}"
        run([IP, "-n", self.hub, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        run([IP, "-n", self.hub, "link", "set", link, "master", "br0", "up"])
        address = f"{self.subnet}.{index}"
        run([IP, "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
        run([IP, "-n", namespace, "link", "set", "eth0", "up"])
        host = Host(self, name, namespace, address)
        self.hosts[name] = host
        return host

    def host_of_address(self, address: str) -> Host | None:
        return next((host for host in self.hosts.values() if host.address == address), None)

    def close(self) -> None:
        """Kill what still runs in the namespaces (by PID) and delete them. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for name in reversed(self._namespaces):
            _delete_namespace(name)
        self._namespaces.clear()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
