"""The one check every token-carrying HTTP client runs before it connects: HTTPS only.

A bearer token (an agent token, a viewer/operator/admin token, the agent token behind key
release) sent over ``http://`` can be read and replayed by anyone on the network path, so
:func:`check_server_url` refuses it before any byte leaves the machine. The one exception is
development against a server on this machine: ``http://`` to a loopback address (127.0.0.0/8,
``::1`` or the name ``localhost``) when asked for explicitly, with ``--allow-plain-http-loopback``
or ``HOSTSEAL_ALLOW_PLAIN_HTTP=loopback``. Non-loopback addresses are refused even then; names
other than ``localhost`` are not resolved (a name can point anywhere).

Run by :class:`hostseal.client.http.Client` (the admin CLI, the agent and key release) before
it connects, and by the commands that take a server's URL before they keep it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from hostseal.errors import HostsealError

ALLOW_PLAIN_HTTP_ENV = "HOSTSEAL_ALLOW_PLAIN_HTTP"
ALLOW_PLAIN_HTTP_FLAG = "--allow-plain-http-loopback"
_ALLOW_VALUE = "loopback"
_LOOPBACK_WORDS = "127.0.0.0/8, ::1 or localhost"
_HTTPS_REMEDY = (
    "Use the server's https:// URL (hostseal server run serves HTTPS only, e.g. "
    "https://attest.example:8443) and give its CA certificate with --ca or HOSTSEAL_SERVER_CA "
    "(hostseal server ca-cert prints its path)."
)


class BadServerUrl(HostsealError):
    """The server's address is not a usable https:// URL."""


class PlainHttpRefused(HostsealError):
    """A token would have been sent over plain HTTP."""


def is_loopback(host: str) -> bool:
    """``host`` (as in a URL, without brackets) is 127.0.0.0/8, ``::1`` or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def _env_allows(env: Mapping[str, str]) -> bool:
    value = env.get(ALLOW_PLAIN_HTTP_ENV, "")
    if value == "":
        return False
    if value != _ALLOW_VALUE:
        raise BadServerUrl(
            f"{ALLOW_PLAIN_HTTP_ENV} is {value!r}; the only value it accepts is {_ALLOW_VALUE!r}.",
            f"Unset {ALLOW_PLAIN_HTTP_ENV} and use https://, or set it to {_ALLOW_VALUE!r} to "
            "allow plain HTTP to a server on this machine (development only).",
        )
    return True


def check_server_url(
    url: str,
    *,
    allow_plain_http_loopback: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """``url`` without a trailing ``/`` if a token may be sent to it; raises otherwise.

    https:// is always allowed; http:// only to a loopback address and only when
    ``allow_plain_http_loopback`` is true or ``HOSTSEAL_ALLOW_PLAIN_HTTP=loopback``."""
    if "://" not in url:
        raise BadServerUrl(
            f"The server address {url!r} has no scheme (https://), so hostseal cannot tell how "
            "to reach it.",
            f"Write it as a URL: https://{url or 'HOST:PORT'} (with --ca for the server's CA "
            "certificate).",
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise BadServerUrl(
            f"The server URL {url!r} uses {scheme}://; hostseal talks to its server over "
            "https:// only.",
            _HTTPS_REMEDY,
        )
    if parts.username is not None or parts.password is not None:
        raise BadServerUrl(
            "The server URL contains a user name or password; secrets never go on a command "
            "line or in a URL.",
            "Remove them from the URL; the token comes from HOSTSEAL_TOKEN or --token-file.",
        )
    try:
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BadServerUrl(f"The server URL {url!r} is malformed: {exc}.", _HTTPS_REMEDY) from None
    if not host:
        raise BadServerUrl(f"The server URL {url!r} names no host.", _HTTPS_REMEDY)
    normal = url.rstrip("/")
    if scheme == "https":
        return normal
    allowed = allow_plain_http_loopback or _env_allows(os.environ if env is None else env)
    exposure = (
        f"Refusing to send a token to {normal} over plain HTTP: anyone on the network path can "
        "read it and act as its holder."
    )
    if not allowed:
        raise PlainHttpRefused(
            exposure,
            f"{_HTTPS_REMEDY} For development against a server on this machine only, "
            f"{ALLOW_PLAIN_HTTP_FLAG} (or {ALLOW_PLAIN_HTTP_ENV}={_ALLOW_VALUE}) allows http:// "
            f"to {_LOOPBACK_WORDS}.",
        )
    if not is_loopback(host):
        raise PlainHttpRefused(
            f"{exposure} plain HTTP is allowed only to a loopback address ({_LOOPBACK_WORDS}) "
            f"with {ALLOW_PLAIN_HTTP_FLAG}; {host} is not one.",
            _HTTPS_REMEDY,
        )
    return normal
