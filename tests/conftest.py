"""Fixtures for the whole suite."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.nodeopcua import NodeOpcua, ensure_installed, node
from tests.processes import children, kill, left_behind


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test that runs the CLI in-process did to logging.

    ``twin_server.logs.configure`` sets structlog's level filter and the root
    handler (on the test's captured stderr); later tests read events with
    ``structlog.testing.capture_logs``, which needs the default configuration.
    """
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


#: the address-space cache of the test runs, kept from one run to the next (one per user
#: and Python environment: the file is keyed by asyncua and the interpreter, and written
#: atomically). A fresh one per run made the first daemon of every run build asyncua's
#: standard address space again: ~1.3 s of CPU, 19 s measured on a loaded machine, which
#: pushed that daemon's start past its fixture's 30 s bound now and then.
ASPACE_CACHE = Path(tempfile.gettempdir()) / (
    f"twin-server-tests-{os.getuid()}-"
    f"{hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]}")


@pytest.fixture(autouse=True, scope="session")
def _state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers built from default configs keep their state (PKI, database) in a
    temporary folder, not in the checkout's var/ (the default state_dir follows
    $STATE_DIRECTORY, as under systemd)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))
    # one address-space cache (opcua/patches/aspace_cache.py) for every server of the run,
    # also those that keep their state in a test's own folder: as systemd's
    # CacheDirectory= sets it
    mp.setenv("CACHE_DIRECTORY", str(ASPACE_CACHE))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="module")
def _no_process_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module's tests leave no child process behind: one that does is named (its
    command line) in an error at the module's end and killed, so that the checks of
    later modules (tests/runtime: a host leaves no process) are not blamed for it."""
    before = set(children())
    yield
    left = left_behind(before)
    if left:
        kill(left)
        pytest.fail(f"{request.module.__name__} left {len(left)} child process(es) running "
                    f"(killed now): " + "; ".join(f"{pid}: {cmd[:300]}"
                                                   for pid, cmd in left.items()),
                    pytrace=False)


@pytest.fixture(scope="module")
def nodeopcua() -> Iterator[NodeOpcua]:
    """Runs node-opcua scripts against a server (tests/nodeopcua); installs node-opcua
    first if ``make test`` has not; skips the test where Node.js is not installed.
    One node process per test module: none outlives the module (tests elsewhere check
    that no child process is left behind)."""
    if node() is None:
        pytest.skip("node (Node.js) is not installed; the node-opcua conformance tests "
                    "need it: apt-get install nodejs npm")
    ensure_installed()
    runner = NodeOpcua()
    runner.start()
    try:
        yield runner
    finally:
        runner.close()
