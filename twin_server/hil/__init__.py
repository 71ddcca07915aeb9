"""Hardware in the loop: mirroring session variables to and from PLC OPC UA servers.

``HilMirror`` (``mirror``) is what the daemon owns; ``health`` holds its
statistics snapshots, ``casting`` the type conversions, ``resolve`` the node
resolution done at every connect, ``security`` the client identity and
certificates, and a PLC's refusal of them put into words.
"""

from twin_server.hil.health import LinkState, MirrorStatistics, PeerStatistics
from twin_server.hil.mirror import HilMirror

__all__ = ["HilMirror", "LinkState", "MirrorStatistics", "PeerStatistics"]
