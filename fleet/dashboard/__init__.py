"""The web dashboard (``fleet server --dashboard-listen``): pages of the pool, the apps,
one app, the events and the upgrade walk, live over server-sent events, with the
actions an operator's role allows.

    sessions.py  the signed session cookie, its expiry, the CSRF and Origin checks (pure)
    views.py     what each page shows, shaped from the API's answers; what changed (pure)
    limits.py    failed sign-ins per address, event streams per session and in all (pure)
    live.py      one informer subscription and one event-log watch for every browser
    server.py    the aiohttp port in the control plane's loop; every page and action is
                 a call to the API's own handlers, as the signed-in identity
    templates/, static/  jinja2 pages and the small script and style they load
"""

from __future__ import annotations

__all__ = ["Dashboard", "DashboardConfig"]

from fleet.dashboard.server import Dashboard, DashboardConfig
