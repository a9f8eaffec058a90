"""The cluster as the study finds it: the scheduler, its workers grouped into named machines,
the resource by which a task asks for a machine, and the hosts whose machines take turns."""

import hashlib
import re
import socket
from dataclasses import dataclass, field

import distributed
from distributed.comm import parse_address, parse_host_port
from distributed.diagnostics.plugin import WorkerPlugin

import quantlab
from quantlab.errors import QuantlabError

CONNECT_TIMEOUT = 5  # seconds to reach the scheduler, and again to find a worker there
ANY = "quantlab-worker"  # offered once by every worker: one study task per worker at a time


def machine_resource(name):
    return f"quantlab-machine:{name}"


class MachineResource(WorkerPlugin):
    """Gives every worker, present and future, one unit of ``ANY`` and of its machine's
    resource."""

    name = "quantlab-machine"

    async def setup(self, worker):
        from quantlab import machine

        try:
            name = machine.identity()["name"]
        except QuantlabError:  # not a plain name: this worker takes no task (``survey`` says why)
            return
        await worker.set_resources(**{ANY: 1, machine_resource(name): 1})


def whoami():
    from quantlab import machine

    try:
        return {**machine.identity(), "quantlab": quantlab.__version__}
    except QuantlabError as error:
        return {"refused": str(error)}


def connect(address):
    """A Dask client of the scheduler at ``address``, or a one-line error within seconds."""
    try:
        _listening(address)
        return distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        why = " ".join(str(error).split()) or type(error).__name__
        raise QuantlabError(f"cannot reach the Dask scheduler at {address} ({why}); start one "
                            f"with `dask scheduler`, or check the address") from None


def _listening(address):
    """Fail at once where a TCP address (read as Dask reads it) names no TCP port or nothing
    listens there (an OSError such as ConnectionRefusedError): Dask would try again until its
    timeout (5 s) for a port that refuses every time."""
    scheme, location = parse_address(address)
    if scheme != "tcp":
        return
    host, port = parse_host_port(location)
    if port > 65535:
        raise ValueError(f"port {port} is not a TCP port: 1-65535")
    socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()


@dataclass
class Machine:
    """One machine of the fleet: its workers and hosts, and what it measured."""

    name: str
    workers: list = field(default_factory=list)
    hosts: list = field(default_factory=list)
    found: dict | None = None  # what _measure returned
    timed: dict = field(default_factory=dict)  # {net: timed records}
    missing: list = field(default_factory=list)  # {"stage", "net", "reason"}


def survey(client, address):
    """{name: Machine} of the workers now in the cluster."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        raise QuantlabError(f"the Dask scheduler at {address} has no workers; start one with "
                            f"`QUANTLAB_MACHINE=NAME dask worker {address}`") from None
    machines = {}
    for worker, me in sorted(client.run(whoami).items()):
        if "refused" in me:
            raise QuantlabError(f"worker {worker}: {me['refused']}, in that worker's environment")
        if me["quantlab"] != quantlab.__version__:
            raise QuantlabError(f"worker {worker} runs quantlab {me['quantlab']} and this machine "
                                f"{quantlab.__version__}; install the same quantlab everywhere")
        found = machines.setdefault(me["name"], Machine(me["name"]))
        found.workers.append(worker)
        if me["host"] not in found.hosts:
            found.hosts.append(me["host"])
    return machines


def host_groups(machines):
    """Names of the machines that share a host, directly or through a machine with workers
    on several hosts: each group times one task at a time."""
    groups = []  # [(hosts, names)]
    for found in machines.values():
        hosts, names = set(found.hosts), [found.name]
        for group in [g for g in groups if g[0] & hosts]:
            groups.remove(group)
            hosts, names = hosts | group[0], group[1] + names
        groups.append((hosts, names))
    return [sorted(names) for _, names in groups]


def folder_name(name):
    """A machine's folder: its name where that is a safe file name, else a safe form of it."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "machine"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"

