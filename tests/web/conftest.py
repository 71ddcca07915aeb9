"""A daemon serving the REST API and the dashboard on 127.0.0.1, port 0, with users
of every role (one per test module), and an HTTP client for it. Its scenario folder
holds the plant's config and a tiny campaign of it (``CAMPAIGN``: 3 short runs on a
local Dask cluster of one worker)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.opcua.conftest import PLANT, run_daemon, stop_daemon
from twin_server.runtime.daemon import Daemon
from twin_server.security.roles import Role
from twin_server.security.users import add_user

PASSWORD = "correct horse battery"
#: the users of the test daemon, by role
USERS = {Role.VIEWER: "vera", Role.OPERATOR: "otto", Role.ADMIN: "alice"}

#: the campaign file in the scenario folder: 3 runs of 2 s of the plant (a second or two)
CAMPAIGN = """
[campaign]
name = "tiny"
config = "plant.toml"
session = "main"
duration = 2.0
[parameters]
"tank.area" = { values = [0.4, 0.5, 0.6] }
[summary."tank.level"]
"""

#: its config: the plant with the session 'main'
PLANT_CONFIG = PLANT + """
[sessions.main]
twin = "plant"
step_size = 0.01
"""

CONFIG = """
[server]
scenario_dirs = ["{folder}"]
campaign_workers = 1
""" + PLANT + """
[server.security]
policies = ["None"]
anonymous = "viewer"

[web]
enabled = true
port = 0

[sessions.main]
twin = "plant"
step_size = 0.01
publish_rate = 20.0

[sessions.main.alarms.HighLevel]  # active within a second of the start
variable = "tank.level"
high = 0.52
severity = 700
message = "Tank level high"
"""


def basic(name: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Web:
    """The daemon and an HTTP client of its web front."""

    daemon: Daemon
    http: aiohttp.ClientSession
    url: str
    headers: dict[Role | None, dict[str, str]] = field(default_factory=dict)

    async def call(self, method: str, path: str, body: Any = None, *,
                   role: Role | None = Role.ADMIN, headers: dict[str, str] | None = None,
                   data: str | None = None) -> tuple[int, Any]:
        """(HTTP status, JSON answer or None) of a request as a user of ``role``
        (None: anonymous)."""
        sent = {**self.headers.get(role, {}), **(headers or {})}
        async with self.http.request(method, self.url + path, json=body, data=data,
                                     headers=sent) as response:
            text = await response.text()
            return response.status, (await response.json() if text else None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def web(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Web]:
    state = tmp_path_factory.mktemp("web")
    for role, name in USERS.items():
        add_user(state / "users.json", name, role, PASSWORD)
    folder = state / "scenarios"
    folder.mkdir()
    (folder / "plant.toml").write_text(PLANT_CONFIG)
    (folder / "tiny.toml").write_text(CAMPAIGN)
    daemon, task = await run_daemon(CONFIG.replace("{folder}", str(folder)), state)
    try:
        assert daemon.web is not None
        async with aiohttp.ClientSession() as http:
            yield Web(daemon, http, daemon.web.url,
                      {role: basic(name) for role, name in USERS.items()})
    finally:
        await stop_daemon(daemon, task)
