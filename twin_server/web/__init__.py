"""The web front (issue #20): a REST API and a dashboard beside OPC UA.

``server.WebServer`` serves them from the daemon's event loop when ``[web]
enabled``; ``api.py`` holds the operations (the same code as the OPC UA methods
and writes), ``alarms.py`` the alarm list and the condition methods, ``scenarios.py`` scenario
runs on the server, ``routes.py`` the table they are served and documented from,
``auth.py`` users, roles and the cross-site check, ``live.py`` the WebSocket
feed of live values (a sink of the pacers), ``openapi.py`` the document, and
``static/`` the dashboard.
"""

from __future__ import annotations

from twin_server.web.server import WebServer

__all__ = ["WebServer"]
