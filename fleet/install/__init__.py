"""Installing fleet on hosts: tooling for what ``deploy/`` ships.

``butane`` renders the Butane configs of ``deploy/fcos`` and ``deploy/flatcar`` to
Ignition JSON where the real ``butane`` tool is not at hand (``python -m
fleet.install.butane``): a strict subset, refusing every key it does not know.
"""

from __future__ import annotations
