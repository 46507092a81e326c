"""End-to-end tests: several docker hosts in network namespaces (see tests/conftest.py)."""
