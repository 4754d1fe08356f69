"""The HTTP status a URL answers with, for tests of servers that refuse requests (401, 403) by design."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(url: str, authorization: str | None = None) -> int:
    """The status of a GET, with an Authorization header when given; an HTTP error is a status, not a raise."""
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
