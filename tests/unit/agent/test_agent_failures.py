"""What the agent remembers of failures (pure), and how Docker's errors are told apart:
the texts are dockerd 20.10's own, read off a real daemon pulling from a real registry."""

from __future__ import annotations

import docker.errors
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.dockererrors import pull_failure, translate
from fleet.agent.failures import FailureBook
from fleet.agent.restarts import Backoff
from fleet.errors import (
    Conflict,
    FleetError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PullFailed,
    Unavailable,
)


def _api_error(status: int, explanation: str, cls: type = docker.errors.APIError) -> Exception:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/images/create"
    error: Exception = cls("failed", response=response, explanation=explanation)
    return error


def test_a_failure_is_news_once_then_waits_out_a_growing_backoff() -> None:
    book: FailureBook[str] = FailureBook(Backoff(initial=2.0, cap=10.0))
    assert book.due("web:v2", 0.0)
    assert book.failed("web:v2", "image-not-found", "gone", 100.0)
    assert not book.due("web:v2", 101.0) and book.due("web:v2", 102.0)
    assert not book.failed("web:v2", "image-not-found", "gone", 102.0)  # the same again
    failure = book.get("web:v2")
    assert failure is not None and failure.count == 2 and failure.retry_at == 106.0
    for now in (106.0, 110.0, 118.0):
        book.failed("web:v2", "image-not-found", "gone", now)
    assert book.get("web:v2").retry_at == 128.0  # type: ignore[union-attr]  # capped at 10
    # Another reason is news again.
    assert book.failed("web:v2", "registry-unreachable", "no answer", 128.0)
    assert book.next_retry() == 138.0
    assert book.succeeded("web:v2") and not book.succeeded("web:v2")
    assert book.due("web:v2", 0.0) and book.next_retry() is None


def test_forgetting_keeps_only_what_is_still_wanted() -> None:
    book: FailureBook[str] = FailureBook(Backoff())
    book.failed("a", "x", "x", 0.0)
    book.failed("b", "x", "x", 0.0)
    book.forget_except(["b", "c"])
    assert book.get("a") is None and book.get("b") is not None and len(book) == 1


@pytest.mark.parametrize(
    ("error", "reason", "words"),
    [
        (
            _api_error(
                404,
                "manifest for 10.0.0.1:5000/web:nope not found: manifest unknown: manifest unknown",
                docker.errors.NotFound,
            ),
            "image-not-found",
            "image 10.0.0.1:5000/web:nope not found in the registry",
        ),
        (
            _api_error(
                404,
                "pull access denied for nothere/web, repository does not exist or may "
                "require 'docker login': denied: requested access to the resource is denied",
                docker.errors.ImageNotFound,
            ),
            "unauthorized",
            "registry 10.0.0.1:5000 refused",
        ),
        (
            _api_error(
                500,
                'Get "http://10.0.0.1:5001/v2/": dial tcp 10.0.0.1:5001: connect: '
                "connection refused",
            ),
            "registry-unreachable",
            "registry 10.0.0.1:5000 of image",
        ),
        (
            _api_error(
                500,
                'Head "http://10.0.0.1:5000/v2/web/manifests/v1": no basic auth credentials',
            ),
            "unauthorized",
            "fleet registry login",
        ),
        (
            _api_error(500, "write /var/lib/docker/tmp/x: no space left on device"),
            "pull-failed",
            "pulling 10.0.0.1:5000/web:nope failed: write",
        ),
    ],
)
def test_pull_failures_are_told_apart(error: Exception, reason: str, words: str) -> None:
    found = pull_failure("10.0.0.1:5000/web:nope", error)
    assert isinstance(found, PullFailed)
    assert found.reason == reason
    assert words in str(found)


def test_a_daemon_that_does_not_answer_is_not_the_registrys_fault() -> None:
    found = pull_failure("web:v1", requests.exceptions.ConnectionError("refused"))
    assert type(found) is Unavailable


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_api_error(404, "No such container: x", docker.errors.NotFound), NotFound),
        (_api_error(409, "Conflict. The container name is already in use"), Conflict),
        (_api_error(400, "invalid reference format"), InvalidArgument),
        (_api_error(403, "forbidden"), PermissionDenied),
        (_api_error(500, "driver failed programming external connectivity"), Unavailable),
        (docker.errors.InvalidArgument("bad bind"), InvalidArgument),
        (docker.errors.NullResource("no id"), InvalidArgument),
        (docker.errors.DockerException("Error while fetching server API version"), Unavailable),
        (requests.exceptions.ReadTimeout("timed out"), Unavailable),
        (OSError(111, "Connection refused"), Unavailable),
    ],
)
def test_docker_errors_become_fleets(error: Exception, expected: type[FleetError]) -> None:
    found = translate("start web.0", error)
    assert type(found) is expected
    assert str(found).startswith("docker: start web.0: ")


@given(st.text(max_size=300), st.integers(min_value=100, max_value=599))
def test_every_api_error_becomes_a_bounded_fleet_error(explanation: str, status: int) -> None:
    error = _api_error(status, explanation)
    for found in (translate("x", error), pull_failure("web:v1", error)):
        assert isinstance(found, FleetError)
        assert len(str(found)) <= 2000
