"""Domain errors answer over HTTP as the table in gpt_runtime.errors says: status, body and headers."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
from gpt_runtime import domain_errors as domain
from gpt_runtime.errors import HTTP_KINDS, http_error

pytestmark = pytest.mark.unit


def test_every_kind_has_its_own_row():
    """A new kind must say how it answers: it would otherwise answer as its base (a 400 for DomainError)."""
    kinds = {cls for _, cls in inspect.getmembers(domain, inspect.isclass) if issubclass(cls, domain.DomainError)}
    assert kinds == set(HTTP_KINDS)


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (domain.InvalidInput("bad", param="stop", code="invalid_value"), 400, "invalid_request_error"),
        (domain.Forbidden("admins only", code="admin_only"), 403, "permission_error"),
        (domain.NotFound("gone", param="conversation_id", code="conversation_not_found"), 404, "not_found_error"),
        (domain.Conflict("taken", param="email", code="email_taken"), 409, "conflict_error"),
        (domain.TooLarge("big", param="prompt", code="prompt_too_large"), 413, "invalid_request_error"),
        (domain.UnsupportedType("not a PNG", param="file"), 415, "invalid_request_error"),
        (domain.InvalidValue("empty", param="file", code="empty_file"), 422, "invalid_request_error"),
        (domain.Disabled("no voice", code="voice_disabled"), 501, "not_implemented_error"),
        (domain.UpstreamFailed("upstream said no", code="upstream_error"), 502, "api_error"),
        (domain.Unavailable("idp down", code="idp_unavailable"), 503, "overloaded"),
    ],
)
def test_each_kind_answers_its_status_and_type(error: domain.DomainError, status: int, type_: str):
    answer = http_error(error)
    assert (answer.status, answer.headers) == (status, {})
    assert answer.body == {"error": {"message": error.message, "type": type_, "param": error.param, "code": error.code}}


def test_unauthenticated_asks_for_a_bearer_token():
    answer = http_error(domain.Unauthenticated("token has expired", code="token_expired"))
    assert (answer.status, answer.headers) == (401, {"WWW-Authenticate": "Bearer"})
    assert answer.body["error"] == {
        "message": "token has expired",
        "type": "authentication_error",
        "param": None,
        "code": "token_expired",
    }
    assert http_error(domain.Unauthenticated()).body["error"]["message"] == "invalid or missing credentials"


def test_a_failed_model_says_nothing_was_stored():
    answer = http_error(domain.ModelFailed())
    assert answer.status == 500
    assert answer.body["error"] == {
        "message": "the model failed to generate a reply; nothing was stored",
        "type": "api_error",
        "param": None,
        "code": "engine_error",
    }


def test_retry_after_is_sent_when_the_error_knows_it():
    answer = http_error(domain.Unavailable("full", code="queue_full", retry_after=5))
    assert (answer.status, answer.headers) == (503, {"Retry-After": "5"})


@dataclass(frozen=True)
class Window:
    limit: int
    remaining: int
    reset_s: float


@pytest.mark.parametrize(
    ("kind", "type_"),
    [
        (domain.TooManyRequests, "requests"),
        (domain.TooManyTokens, "tokens"),
        (domain.QuotaExceeded, "insufficient_quota"),
    ],
)
def test_rate_limits_name_the_limit_and_when_it_frees(kind: type[domain.RateLimited], type_: str):
    answer = http_error(kind("over; retry in 3s", retry_after=3))
    assert (answer.status, answer.headers) == (429, {"Retry-After": "3"})
    assert answer.body["error"] == {
        "message": "over; retry in 3s",
        "type": type_,
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_a_request_window_adds_its_numbers_before_retry_after():
    answer = http_error(domain.TooManyRequests("over", retry_after=2, window=Window(10, 0, 1.2)))
    assert list(answer.headers.items()) == [
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "2"),
        ("Retry-After", "2"),
    ]
