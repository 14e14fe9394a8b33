"""Fetch a file from the first of several mirrors that serves it whole and valid.

Standard library only. The bytes go to ``<dest>.part`` and are renamed to ``dest``
only once they pass the caller's check, so nothing half-written ever looks done.
A transfer that drops midway is resumed from the same mirror with an HTTP Range
request; bytes are never spliced across mirrors, whose copies may differ byte for
byte (gzip wrappers do). Any network failure, an oversized answer or a file that
fails its check moves on to the next mirror.
"""

from __future__ import annotations

import http.client
import logging
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from hdetach.experiments.errors import DataError

log = logging.getLogger(__name__)

# URLError, HTTPError, timeouts, refused and reset connections are all OSErrors; a
# body cut short can also raise http.client.IncompleteRead, which is not.
NETWORK_ERRORS = (OSError, http.client.HTTPException)
CHUNK = 1 << 16


class _Dropped(Exception):
    """The transfer stopped before the end the server announced."""

    def __init__(self, have: int, reason: str):
        super().__init__(reason)
        self.have = have


def fetch_first(
    urls: Sequence[str],
    dest: Path,
    check: Callable[[Path], object],
    max_bytes: int,
    timeout: float = 30.0,
    resumes: int = 3,
) -> str:
    """Download the first of ``urls`` that works to ``dest``; return that url.

    ``check(path)`` raises DataError for a file that is not the one wanted; a server
    that sends more than ``max_bytes`` is dropped. Each url gets ``resumes`` Range
    requests to finish a dropped transfer. DataError lists every url's failure.
    """
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        try:
            _fetch(url, part, max_bytes, timeout, resumes)
            check(part)
        except (*NETWORK_ERRORS, DataError, _Dropped) as e:
            failures.append(f"{url}: {' '.join(str(e).split()) or type(e).__name__}")
            part.unlink(missing_ok=True)
            continue
        part.replace(dest)
        log.info("%s served %s", url, dest.name)
        return url
    raise DataError(f"{dest.name} failed from every mirror ({'; '.join(failures)})")


def _fetch(url: str, part: Path, max_bytes: int, timeout: float, resumes: int) -> None:
    """Stream ``url`` into ``part`` from its first byte, resuming after a drop."""
    have = 0
    for attempt in range(resumes + 1):
        try:
            _transfer(url, part, have, max_bytes, timeout)
            return
        except _Dropped as e:
            if attempt == resumes:
                raise
            log.info("%s: %s; resuming", url, e)
            have = e.have


def _transfer(url: str, part: Path, start: int, max_bytes: int, timeout: float) -> None:
    """One request for ``url`` from byte ``start`` on, written to ``part`` at ``start``.

    Raises _Dropped when the body ends early, DataError for a server that answers
    with the wrong range or too many bytes, and a network error before any body.
    """
    headers = {"Range": f"bytes={start}-"} if start else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status == 200:
            start = 0  # a whole file (the server ignored the Range): start over
        elif response.status != 206 or _range_start(response) != start:
            raise DataError(f"answered HTTP {response.status} to a request from byte {start}")
        total = _announced_size(response)
        if total is not None and total > max_bytes:
            raise DataError(f"announced {total} bytes, more than the {max_bytes} expected")
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            have = start
            try:
                while chunk := response.read(CHUNK):
                    have += len(chunk)
                    if have > max_bytes:
                        raise DataError(f"sent more than the {max_bytes} bytes expected")
                    out.write(chunk)
            except NETWORK_ERRORS as e:
                raise _Dropped(have, f"connection dropped after {have} bytes ({e!r})") from e
    if total is not None and have < total:
        raise _Dropped(have, f"connection closed after {have} of {total} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes FIRST-LAST/TOTAL``."""
    first = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
    return int(first) if first.isdigit() else None


def _announced_size(response: http.client.HTTPResponse) -> int | None:
    """The whole file's size as the server announced it, if it did."""
    if response.status == 206:
        size = response.headers.get("Content-Range", "").rpartition("/")[2]
    else:
        size = response.headers.get("Content-Length") or ""
    return int(size) if size.isdigit() else None
