"""Integration tests: real etcd and a real dockerd, started by fixtures in tests/conftest.py."""
