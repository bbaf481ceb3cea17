"""Where a launched run's Reverb port is reachable, and the check that keeps it off public addresses.

Reverb has neither a bind address nor authentication: its server listens on every interface of its machine
(README, "Security"). `protege-launch` therefore (1) gives the jobs the server node's address as Ray knows it
(the node IP each node registered with, `ray start --node-ip-address`), and refuses to start when that
address is public, and (2) refuses to start the server on a node that has any public address at all unless
the user says a firewall keeps the port off it (`--reverb_behind_firewall`).
"""

import ipaddress
import socket
import time
from typing import Dict, List, Sequence, Tuple

from protege.runtime import errors


def interface_addresses() -> List[Tuple[str, str]]:
  """(interface, address) of every IPv4 and IPv6 address of this machine."""
  import psutil  # pylint: disable=g-import-not-at-top  (on the server's node only)
  found = []
  for interface, addresses in psutil.net_if_addrs().items():
    for address in addresses:
      if address.family in (socket.AF_INET, socket.AF_INET6):
        found.append((interface, address.address.split('%')[0]))  # fe80::1%eth0: drop the zone
  return found


def is_public(address: str) -> bool:
  """Whether `address` can be reached from the internet (not loopback, private, link-local or reserved)."""
  ip = ipaddress.ip_address(address)
  return ip.is_global and not ip.is_multicast


def free_port() -> int:
  """A TCP port free on this machine now (the kernel's choice)."""
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def describe_node(port: int = 0) -> Dict[str, object]:
  """What the driver needs of the node a job lands on: Ray's node id and IP, a port, the addresses."""
  import ray  # pylint: disable=g-import-not-at-top
  return {'node_id': ray.get_runtime_context().get_node_id(), 'node_ip': ray.util.get_node_ip_address(),
          'port': port or free_port(), 'addresses': interface_addresses()}


def check_reverb_exposure(host: str, port: int, addresses: Sequence[Tuple[str, str]],
                          behind_firewall: bool) -> None:
  """Raises ConfigError (one line: the address, and the fix) if the jobs would reach the Reverb server at a
  public `host`, or if the server's node has a public address and the user did not say a firewall closes
  `port` there."""
  if is_public(host):
    raise errors.ConfigError(
        f'the Reverb server\'s node has the public Ray node IP {host}: the actors and the learner would send '
        f'the run\'s trajectories and weights to it unauthenticated. Start Ray on every node with its private '
        f'address (ray start --node-ip-address=<private IP>) (README, "Launching on Ray").')
  public = [f'{address} ({interface})' for interface, address in addresses if is_public(address)]
  if public and not behind_firewall:
    raise errors.ConfigError(
        f'the Reverb server\'s node has the public address {", ".join(public)}, and Reverb listens on every '
        f'interface (it has no bind address): port {port} would be open to the internet there. Close the port '
        f'to everything but the cluster\'s private network in the firewall, then pass --reverb_behind_firewall '
        f'(and --reverb_port={port} to keep the port the rule names), or run on nodes without a public address.')


def check_reachable(address: str, seconds: float = 10.0, what: str = 'Ray cluster', flag: str = '--ray_address') -> None:
  """Raises UnreachableError (one line) unless a TCP connection to `address` ('host:port', or 'ray://host:port';
  'auto' is not checked) opens within `seconds`, retrying with backoff. Ray itself would wait for an absent
  cluster without end."""
  target = address.split('://', 1)[-1]
  if address == 'auto' or ':' not in target:
    return
  host, port = target.rsplit(':', 1)
  try:
    port_number = int(port)
  except ValueError:
    raise errors.ConfigError(f'{flag}={address}: expected host:port, e.g. 10.0.0.1:6379.') from None
  deadline, pause, last_error = time.time() + seconds, 0.25, None
  while True:
    try:
      with socket.create_connection((host.strip('[]'), port_number), timeout=max(0.5, deadline - time.time())):
        return
    except OSError as error:
      last_error = error
    if time.time() + pause > deadline:
      break
    time.sleep(pause)
    pause = min(2 * pause, 2.0)
  raise errors.UnreachableError(
      f'no {what} answers at {flag}={address} within {seconds:.0f} s ({last_error}): start it (ray start '
      f'--head on that node) or fix the address; leave {flag} out to start a local Ray instance.')
