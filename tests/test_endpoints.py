"""The loopback guard every local-target client goes through."""

from __future__ import annotations

import pytest

from generator.base.endpoints import is_loopback_url


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "http://127.9.8.7/", "http://[::1]:80", "http://localhost:1"])
def test_loopback_urls(url):
    assert is_loopback_url(url)


@pytest.mark.parametrize(
    "url", ["https://ec2.ap-northeast-2.amazonaws.com", "http://10.0.0.1:5000", "http://192.0.2.2", "", "snapshot:x"]
)
def test_everything_else_is_not_loopback(url):
    assert not is_loopback_url(url)
