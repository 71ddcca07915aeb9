"""A cache of asyncua's standard address space, so that a restart does not rebuild it.

``asyncua.Server.init`` fills the standard OPC UA address space (~6,200 nodes, the
types and the Server object) by running generated code through
``NodeManagementService.add_nodes``: ~1.3 s of CPU on the development machine, on
every start, before anything of ours exists. ``init_server`` keeps a pickle of the
address space *as it stands right after that fill* in ``cache_dir`` and loads it
on later starts instead (~0.3 s, with the cyclic collector paused). The rest of
``init`` (asyncua's fixes to the standard nodes, its Server object values, the
history manager) runs as before on either path, so the result is the same address
space; ``tests/opcua/test_startup.py`` compares the two node by node.

The file is keyed by the asyncua version, the interpreter (pickles of asyncua's
classes are only read back by the same ones) and the size and mtime of asyncua's
generated address-space module, so an upgrade or reinstall builds a fresh one. It
is written atomically (a temporary file renamed into place) on the first start
that misses; a file that fails to load, or loads as something other than an
address space, is logged, ignored and rebuilt: the cache can only cost time,
never change what is served.

Why not asyncua's own ``Server.init(shelf_file)``: it looks for ``shelf_file`` or
``shelf_file.db``, but Python's ``dbm`` writes other names where only
``dbm.dumb`` is available (``.dat``, ``.dir``, ``.bak``; the case here, no gdbm), so
it rebuilds its shelf, 2+ s, on every start. And it replaces the address space's
dict with a ``LazyLoadingDict`` whose every lookup is a Python call, which the
publisher's ``write_attribute_value`` would then pay per value; here the address
space stays a plain dict.

The one hook into asyncua: ``InternalServer.init`` calls
``self.load_standard_address_space(shelf_file)`` first. For the duration of
``init`` that method is replaced *on this server's instance only* (the class is
untouched) by one that loads the cache or, on a miss, calls the original and
then writes the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import asyncua
import structlog
from asyncua import Server, ua

log = structlog.get_logger(__name__)

#: what ``init_server`` did: loaded the cache, built it (a miss), or neither
Outcome = Literal["hit", "built", "off"]

#: the cache directory systemd's ``CacheDirectory=`` sets (else ``state_dir/cache``)
CACHE_ENV = "CACHE_DIRECTORY"

#: a loaded file must hold at least this many nodes, the Server object among them
_MIN_NODES = 1000
_SERVER = ua.NodeId(ua.ObjectIds.Server)
_HOOK = "load_standard_address_space"


def cache_dir(state_dir: str | os.PathLike[str]) -> Path:
    """Where the cache lives: ``$CACHE_DIRECTORY`` when systemd's ``CacheDirectory=``
    (or a test suite) sets it, else ``cache/`` under ``state_dir``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env.split(":")[0]) if env else Path(state_dir) / "cache"


def cache_file(directory: Path) -> Path:
    """The cache file in ``directory`` for this asyncua and this interpreter."""
    from asyncua.server.standard_address_space import standard_address_space as generated

    source = Path(generated.__file__ or "")
    try:
        st = source.stat()
        stamp = f"{source}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = str(source)
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    return directory / (f"address-space-asyncua-{asyncua.__version__}-"
                        f"{sys.implementation.cache_tag}-{digest}.pickle")


async def init_server(server: Server, directory: Path | None) -> Outcome:
    """``await server.init()``, the standard address space coming from the cache in
    ``directory`` when there is one (``None``: no cache, asyncua's own way)."""
    if directory is None:
        await server.init()
        return "off"
    iserver = server.iserver
    original = getattr(iserver, _HOOK)
    path = cache_file(directory)
    outcome: Outcome = "off"

    async def load_standard_address_space(shelf_file: Path | None = None) -> None:
        nonlocal outcome
        started = time.perf_counter()
        if _load(iserver.aspace, path):
            outcome = "hit"
            log.debug("address_space_cache_loaded", file=str(path),
                      seconds=round(time.perf_counter() - started, 3))
            return
        await original(shelf_file)
        outcome = "built"
        await _save(iserver.aspace, path)

    setattr(iserver, _HOOK, load_standard_address_space)
    try:
        await server.init()
    finally:
        delattr(iserver, _HOOK)  # the class's method again
    if outcome == "off":  # asyncua no longer calls the hook: say so, the cache is dead
        log.warning("address_space_cache_unused", reason=f"asyncua {asyncua.__version__}'s "
                    f"InternalServer.init did not call {_HOOK}")
    return outcome


@contextlib.contextmanager
def _collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pickling walks, and unpickling allocates, ~10**6 objects that all live on:
    with the collector running, its passes over them cost several times the work.
    ``freeze``: move what exists by then into the collector's permanent generation
    before it runs again (else its next young pass walks every object the load
    made, ~0.25 s); the standard address space lives as long as the server, and
    the daemon freezes everything at READY anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def _load(aspace: Any, path: Path) -> bool:
    """Fill ``aspace`` from ``path``; False (``aspace`` untouched) if there is no
    usable file."""
    if not path.is_file():
        return False
    previous = aspace._nodes
    try:
        with _collector_paused(freeze=True):
            aspace.load(path)
        nodes = aspace._nodes
        if not isinstance(nodes, dict) or len(nodes) < _MIN_NODES or _SERVER not in nodes:
            raise ValueError(f"holds {type(nodes).__name__} of {len(nodes)} entries, "
                             "not a standard address space")
    except Exception as exc:
        aspace._nodes = previous
        log.warning("address_space_cache_ignored", file=str(path), error=repr(exc),
                    fix="it is rebuilt now; nothing to do")
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    return True


async def _save(aspace: Any, path: Path) -> None:
    """Write the address space to ``path`` atomically; a failure is only logged."""
    started = time.perf_counter()
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        with _collector_paused():
            await asyncio.to_thread(aspace.dump, tmp)
        os.replace(tmp, path)
        tmp = None
    except Exception as exc:
        log.warning("address_space_cache_not_written", file=str(path), error=repr(exc),
                    fix="check that the cache folder is writable; the server runs without")
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    for stale in path.parent.glob("address-space-*.pickle"):
        if stale != path:  # an earlier asyncua's
            with contextlib.suppress(OSError):
                stale.unlink()
    log.info("address_space_cache_written", file=str(path),
             seconds=round(time.perf_counter() - started, 3))
