"""The app spec: what an app file asks fleet to run, validated with pydantic.

An app file is YAML holding one app per document. ``load_file`` and ``load_documents`` turn
it into ``AppSpec`` objects or raise one ``SpecError`` listing every problem with its line
(``AppFile`` also keeps where each app came from, to place the control plane's problems);
the server re-validates specs sent over the API (``spec.model_dump_json()``) with
``parse_spec_json``. The models live in ``_model``, file reading in ``_files``; DNS labels
(app and secret names) in ``fleet._names``, shared with the key layout.
"""

from __future__ import annotations

from fleet._names import DNS_LABEL, is_dns_label
from fleet.spec._files import AppFile, json_schema, load_documents, load_file, parse_spec_json
from fleet.spec._model import (
    MAX_FILE_BYTES,
    MIN_MEMORY,
    RESERVED_LABEL_PREFIX,
    AppSpec,
    Constraint,
    HealthCheck,
    PortSpec,
    Resources,
    RestartPolicy,
    SecretRef,
    UpdateStrategy,
    format_memory,
    parse_duration,
    parse_memory,
)

__all__ = [
    "DNS_LABEL",
    "MAX_FILE_BYTES",
    "MIN_MEMORY",
    "RESERVED_LABEL_PREFIX",
    "AppFile",
    "AppSpec",
    "Constraint",
    "HealthCheck",
    "PortSpec",
    "Resources",
    "RestartPolicy",
    "SecretRef",
    "UpdateStrategy",
    "format_memory",
    "is_dns_label",
    "json_schema",
    "load_documents",
    "load_file",
    "parse_duration",
    "parse_memory",
    "parse_spec_json",
]
