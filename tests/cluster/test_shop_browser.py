"""The shop's journey in a real browser against an installed release (issue 16, `make test-cluster`).

The journey of tests/functional/test_shop_browser.py, unchanged, through the release's gateway
(GATEWAY_URL): a new user signs up and sells a product, a second finds it by search and reviews
it, the first reloads and sees the page served from the cache, by a catalog pod. Headless Debian
Chromium (tests/functional/browser.py: loopback only, script errors and CSP violations fail it);
screenshots in reports/browser/test_sell_find_review_and_watch_the_cache/.
"""
from __future__ import annotations

import pytest

from tests.cluster.conftest import GATEWAY_URL
from tests.functional.test_shop_browser import problems, test_sell_find_review_and_watch_the_cache  # noqa: F401


@pytest.fixture
def gateway() -> str:
    return GATEWAY_URL
