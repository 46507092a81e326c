"""fleet: run containers on a pool of identical Docker hosts.

A gRPC control plane keeps the desired state in etcd and places replicas on hosts; an
agent on every host reconciles that state with its Docker daemon. ``fleet.client`` is
the library the CLI is built on.

Packages: ``spec`` (the app file), ``store`` (etcd: keys, records, the informer),
``scheduler`` (pure placement), ``controlplane`` (the server: API, agent stream,
controllers), ``agent`` (one per Docker host), ``cli`` (the ``fleet`` command), ``pki``
(certificates), ``install`` (Butane to Ignition for ``deploy/``), ``testing`` (test
tooling only). Beside them: ``client``, ``transport`` (mutual TLS), ``errors``,
``policy``, ``secrets``, ``hostlabels``, ``hostpaths``, ``refusals`` (why a connection
was refused), ``up`` (``fleet up``). ARCHITECTURE.md at the repository's root says
where each rule lives.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
