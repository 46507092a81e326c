"""The app spec: what an app file asks fleet to run, validated with pydantic.

An app file is YAML holding one app per document. ``load_file`` and ``load_documents`` turn
it into ``AppSpec`` objects or raise one ``SpecError`` listing every problem with its line
(``AppFile`` also keeps where each app came from, to place the control plane's problems);
the server re-validates specs sent over the API (``spec.model_dump_json()``) with
``parse_spec_json``.

Where things live (every module but this one is private; import from ``fleet.spec``):

- ``_files``: reading app files and API specs, and the messages (file, line, fix) of
  every problem; the JSON schema of an app document.
- ``_model``: ``AppSpec`` and its own fields (name, image, env, labels, volumes, mode,
  job counts, ...); which fields are the container template (``AppSpec.template``,
  ``template_of``) and which only say how many and where.
- ``_ports``: published ports (``PortSpec``) and their uniqueness in an app.
- ``_resources``: CPU and memory per replica (``Resources``).
- ``_restart``: Docker's restart policy (``RestartPolicy``).
- ``_constraints``: host label selectors (``Constraint``); what labels a host has is
  ``fleet.hostlabels``.
- ``_health``: health checks (``HealthCheck``).
- ``_ingress``: how the edge hosts route to an app (``Ingress``) and the routes it
  claims.
- ``_docker``: Docker's other container options (entrypoint, user, ulimits, sysctls,
  devices, logging, ...) in compose's shapes, and fleet's default log (``DEFAULT_LOGGING``).
- ``_update``: the update strategy (``UpdateStrategy``) and its surge and unavailable
  arithmetic.
- ``_units``: sizes and durations as users write them (``parse_memory``,
  ``parse_duration``), also for the CLI's options.
- ``_fields``: the frozen base model and the field readings every model shares.
- ``_image``: Docker image references; ``_quote``: how values are quoted in messages.
- DNS labels (app and secret names) are ``fleet._names``, shared with the key layout.
"""

from __future__ import annotations

from fleet._names import DNS_LABEL, is_dns_label
from fleet.spec._constraints import Constraint
from fleet.spec._docker import (
    DEFAULT_LOGGING,
    DOCKER_FIELDS,
    NAMESPACED_SYSCTLS,
    Logging,
    Ulimit,
    device_host_path,
    is_namespaced_sysctl,
)
from fleet.spec._files import (
    MAX_FILE_BYTES,
    AppFile,
    json_schema,
    load_documents,
    load_file,
    parse_spec_json,
)
from fleet.spec._health import HealthCheck
from fleet.spec._ingress import Ingress, http_route, tcp_route
from fleet.spec._model import RESERVED_LABEL_PREFIX, AppSpec, SecretRef, template_of
from fleet.spec._ports import PortSpec
from fleet.spec._resources import MIN_MEMORY, Resources
from fleet.spec._restart import RestartPolicy
from fleet.spec._units import format_memory, parse_duration, parse_memory
from fleet.spec._update import UpdateStrategy

__all__ = [
    "DEFAULT_LOGGING",
    "DNS_LABEL",
    "DOCKER_FIELDS",
    "MAX_FILE_BYTES",
    "MIN_MEMORY",
    "NAMESPACED_SYSCTLS",
    "RESERVED_LABEL_PREFIX",
    "AppFile",
    "AppSpec",
    "Constraint",
    "HealthCheck",
    "Ingress",
    "Logging",
    "PortSpec",
    "Resources",
    "RestartPolicy",
    "SecretRef",
    "Ulimit",
    "UpdateStrategy",
    "device_host_path",
    "format_memory",
    "http_route",
    "is_dns_label",
    "is_namespaced_sysctl",
    "json_schema",
    "load_documents",
    "load_file",
    "parse_duration",
    "parse_memory",
    "parse_spec_json",
    "tcp_route",
    "template_of",
]
