"""What the OPC UA methods need of the daemon: the session and twin lifecycle.

The address space does not own sessions or their clocks; the daemon does
(``twin_server.runtime.daemon.Daemon`` implements this protocol), through its
session host: sessions are ``HostedSession`` handles here. A method handler parses
and checks its arguments, calls one of these, and maps our exceptions to status
codes. Each call either completes (nodes added or removed, events emitted) or
raises with nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import Value
from twin_server.runtime.host import HostedSession

Overrides = Mapping[str, Mapping[str, Value]]


class Runtime(Protocol):
    @property
    def twins(self) -> Mapping[str, TwinDefinition]:
        """Every twin definition by name (read-only)."""
        ...

    async def create_session(self, twin: str, name: str,
                             parameters: Overrides) -> HostedSession:
        """A new client-owned session of ``twin``, served and Ready (NotFound for an
        unknown twin, component or parameter; InvalidArgument for a bad name;
        AlreadyExists for a taken one; TypeMismatch / OutOfRange for a bad value;
        ResourceExhausted beyond ``server.max_sessions``)."""
        ...

    async def delete_session(self, name: str) -> None:
        """Stop, unserve and free the session (NotFound if unknown)."""
        ...

    async def fork_session(self, source: str, name: str,
                           realtime_factor: float) -> HostedSession:
        """A new client-owned session of the same twin in exactly ``source``'s current
        state, running at ``realtime_factor`` if the source runs, else Suspended."""
        ...

    async def define_twin(self, definition: str) -> TwinDefinition:
        """Validate TOML text as a config's twin and serve it (ConfigErrors if invalid,
        AlreadyExists if the name is taken)."""
        ...

    async def remove_twin(self, name: str) -> None:
        """Unserve a twin (NotFound if unknown, InvalidState while sessions of it exist)."""
        ...

    async def take_snapshot(self, session: str) -> str:
        """Record the session's state; return the snapshot's id."""
        ...

    async def restore_snapshot(self, session: str, snapshot_id: str) -> None:
        """Return the session to a recorded state (NotFound for an unknown id)."""
        ...

    async def reload_config(self) -> str:
        """Apply the config file as it is now; a summary of what changed (ConfigErrors
        for an invalid file, InvalidState when the change cannot apply: nothing changed)."""
        ...

    async def inputs_released(self, session: str) -> None:
        """The session's forced inputs were released (Reset, ReleaseInput,
        ReleaseInputs): whoever drives inputs of it (HIL bindings) forces them again."""
        ...

    def touch(self, session: str) -> None:
        """Note client activity on a session (reads, writes, calls, subscriptions),
        which keeps a client-created session from expiring."""
        ...
