"""The ``fleet`` command line (typer), a thin layer over ``fleet.client``.

Where each command lives (``main.py`` registers them all, in ``fleet --help``'s order):

- ``apps``: apply, diff, delete, scale, get, describe, schema
- ``observe``: ps, events, stats, logs, top, exec
- ``rollouts``: rollout status/history/undo/pause/resume/restart, set image, wait,
  endpoints; and following a rollout for ``apply --wait``
- ``hosts``: cordon, uncordon, drain, upgrade-hosts, label host, hosts remove
- ``secrets``, ``policy``, ``tokens``, ``certs``: the groups of those names
- ``registries``: the ``registry`` group (login, logout, list, mirror)
- ``servercmd``, ``agentcmd``, ``daemons``: server, agent, up; what they share:
  ``daemonconfig`` (options from ``FLEET_*`` variables and a ``--config`` file),
  ``lifecycle`` (SIGTERM, sd_notify), ``logformat`` (text, journal or JSON lines, the
  logging options)
- ``version``: version, and the root's ``--version``

Shared by them: ``output`` (printing, the one error printer, exit statuses, ``-o``),
``tables`` (the columns of get, ps and describe), ``connection`` (``--server`` and the
TLS options), ``options`` (duration and memory option values).
"""
