"""The client address behind an ingress: X-Forwarded-For counts only from GPT_FORWARDED_ALLOW_IPS."""

from __future__ import annotations

import pytest

from .conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration
LOGIN = {"email": "nobody@example.com", "password": "wrong-password"}


def _login(client, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/auth/login", json=LOGIN, headers=headers).status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(tmp_path):
    runtime = start_runtime(tmp_path, GPT_RATE_LIMIT_ANONYMOUS="3", GPT_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        with runtime.client() as proxy:  # this test's connections come from 127.0.0.1: the trusted proxy
            assert [_login(proxy, "203.0.113.1") for _ in range(4)] == [401, 401, 401, 429]
            assert _login(proxy, "203.0.113.2") == 401  # another client behind the same proxy
            # a client cannot escape by sending its own X-Forwarded-For: the proxy appends the address it saw,
            # and the rightmost address that is not a trusted proxy is the client
            assert _login(proxy, "198.51.100.7, 203.0.113.1") == 429
            assert _login(proxy) == 401  # the proxy's own requests: its own bucket
    finally:
        stop_runtime(runtime)


def test_ipv6_clients_count_per_64(tmp_path):
    """One subscriber holds a /64 or more: per-address buckets would let it rotate through them."""
    runtime = start_runtime(tmp_path, GPT_RATE_LIMIT_ANONYMOUS="3", GPT_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        with runtime.client() as proxy:
            assert [_login(proxy, f"2001:db8:0:7::{i}") for i in range(1, 5)] == [401, 401, 401, 429]
            assert _login(proxy, "2001:db8:0:8::1") == 401  # the next /64 is someone else
            assert _login(proxy, "::ffff:198.51.100.9") == 401  # an IPv4-mapped address counts as its IPv4
            assert [_login(proxy, "198.51.100.9") for _ in range(3)] == [401, 401, 429]
    finally:
        stop_runtime(runtime)


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8"], ids=["default", "other-network"])
def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(tmp_path, trusted: str):
    runtime = start_runtime(tmp_path, GPT_RATE_LIMIT_ANONYMOUS="3", GPT_FORWARDED_ALLOW_IPS=trusted)
    try:
        with runtime.client() as client:
            statuses = [_login(client, f"203.0.113.{i}") for i in range(1, 6)]
        assert statuses == [401, 401, 401, 429, 429]
    finally:
        stop_runtime(runtime)
