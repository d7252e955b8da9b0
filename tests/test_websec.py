"""outlast.websec: the Host, cross-site, content-type, token and binding rules (pure, no server)."""

from __future__ import annotations

import pytest

from outlast.websec import Refused, WebPolicy, check_binding, is_loopback

LOCAL = WebPolicy("127.0.0.1", 8233)
JSON = {"host": "127.0.0.1:8233", "content-type": "application/json"}


@pytest.mark.parametrize("host", ["127.0.0.1:8233", "localhost:8233", "[::1]:8233", "LOCALHOST:8233"])
def test_loopback_aliases_of_the_bound_port_pass(host: str) -> None:
    LOCAL.check("POST", {**JSON, "host": host})


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({**JSON, "host": "rebind.evil.example:8233"}, 403, "not this server"),
        ({**JSON, "host": "127.0.0.1:9999"}, 403, "not this server"),
        ({**JSON, "host": "127.0.0.1:x"}, 400, "malformed"),
        ({"content-type": "application/json"}, 400, "missing Host"),
        ({**JSON, "origin": "https://evil.example"}, 403, "Origin"),
        ({**JSON, "origin": "http://localhost:3000"}, 403, "Origin"),
        ({**JSON, "origin": "null"}, 403, "Origin"),
        ({**JSON, "sec-fetch-site": "cross-site"}, 403, "cross-site"),
        ({**JSON, "sec-fetch-site": "same-site"}, 403, "same-site"),
        ({**JSON, "content-type": "text/plain"}, 415, "application/json"),
        ({"host": "127.0.0.1:8233"}, 415, "application/json"),
        ({**JSON, "content-type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    ],
)
def test_refusals(headers: dict[str, str], status: int, words: str) -> None:
    with pytest.raises(Refused) as info:
        LOCAL.check("POST", headers)
    assert info.value.status == status and words in info.value.message


def test_same_origin_and_non_browser_posts_pass() -> None:
    LOCAL.check("POST", {**JSON, "origin": "http://127.0.0.1:8233", "sec-fetch-site": "same-origin"})
    LOCAL.check("POST", {**JSON, "content-type": "application/json; charset=utf-8"})


def test_cross_site_reads_only_as_navigation() -> None:
    LOCAL.check("GET", {"host": "127.0.0.1:8233", "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    with pytest.raises(Refused):
        LOCAL.check("GET", {"host": "127.0.0.1:8233", "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors",
                            "origin": "https://evil.example"})
    with pytest.raises(Refused):
        LOCAL.check("GET", {"host": "127.0.0.1:8233", "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})


def test_allowed_hosts_and_wildcard_binding() -> None:
    proxy = WebPolicy("127.0.0.1", 8233, allowed_hosts=frozenset({"runs.example.com"}))
    proxy.check("GET", {"host": "runs.example.com"})
    proxy.check("POST", {**JSON, "host": "runs.example.com", "origin": "https://runs.example.com"})
    everywhere = WebPolicy("0.0.0.0", 8233, token="t")
    everywhere.check("GET", {"host": "10.1.2.3:8233", "authorization": "Bearer t"})


def test_token_header_or_cookie() -> None:
    policy = WebPolicy("127.0.0.1", 8233, token="s3cret", token_cookie="outlast_token")
    policy.check("GET", {"host": "127.0.0.1:8233", "authorization": "Bearer s3cret"})
    policy.check("GET", {"host": "127.0.0.1:8233"}, {"outlast_token": policy.cookie_value()})
    for headers, cookies in [({}, {}), ({"authorization": "Bearer wrong"}, {}), ({}, {"outlast_token": "s3cret"})]:
        with pytest.raises(Refused) as info:
            policy.check("GET", {"host": "127.0.0.1:8233", **headers}, cookies)
        assert info.value.status == 401


def test_forms_need_the_csrf_token() -> None:
    policy = WebPolicy("127.0.0.1", 8233, forms=True)
    policy.check("POST", {**JSON, "content-type": "application/x-www-form-urlencoded"})
    policy.check_csrf(policy.csrf_token())
    for bad in (None, "", "0" * 64):
        with pytest.raises(Refused):
            policy.check_csrf(bad)
    assert WebPolicy("127.0.0.1", 8233).csrf_token() != policy.csrf_token()  # per process secret


def test_binding() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com"]))
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", "t")
    with pytest.raises(ValueError, match="--token"):
        check_binding("0.0.0.0", None)
