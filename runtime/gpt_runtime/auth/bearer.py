"""The one reading of `Authorization: Bearer <token>` for every HTTP edge: the current-user dependency, the read
cache in front of the router and the WebSocket.

The scheme is case-insensitive and separated from the token by one space; the token is stripped; an empty token
is no token (the caller answers "missing", never "invalid").
"""

from __future__ import annotations


def _split(authorization: str | None) -> tuple[bool, str]:
    """Whether the header names the Bearer scheme (`bearer ` in any case), and what follows the first space."""
    scheme, space, rest = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and bool(space), rest


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none, or it is blank, or the
    header names another scheme."""
    scheme, _, rest = (authorization or "").partition(" ")
    token = rest.strip()
    return token if scheme.lower() == "bearer" and token else None


def websocket_token(authorization: str | None, access_token: str | None) -> str | None:
    """A WebSocket's token: the Bearer header's when it has one (even a blank one, which is then missing), else
    the `access_token` query parameter as sent (browsers cannot set headers on a WebSocket)."""
    if _split(authorization)[0]:
        return bearer_token(authorization)
    return access_token or None
