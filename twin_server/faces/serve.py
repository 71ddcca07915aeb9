"""Serving the configured faces on the daemon's server (``[faces.<name>]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from twin_server.config.schema import FaceConfig
from twin_server.faces.loader import LoadedNodes, load
from twin_server.runtime.collector import collector_paused

log = structlog.get_logger(__name__)


async def serve_faces(server: Any, faces: dict[str, FaceConfig],
                      base: Path) -> dict[str, LoadedNodes]:
    """Load every face's NodeSet2 files (relative to ``base``, the config file's folder)
    into ``server`` (an asyncua Server); a model two faces share is loaded once.
    NodeSetError names the file, the node and the reason."""
    loaded_models: dict[str, Path] = {}
    result: dict[str, LoadedNodes] = {}
    for name, face in faces.items():
        paths = [base / p for p in face.nodesets]
        with collector_paused():
            loaded = await load(server, paths, loaded_models=loaded_models)
        result[name] = loaded
        log.info("face_loaded", face=name, nodes=len(loaded.nodes),
                 files=[p.name for p in loaded.files], seconds=round(loaded.seconds, 3),
                 references_left_out=loaded.skipped, values_left_out=loaded.valueless)
    return result
