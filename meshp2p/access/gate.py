"""Who may ask this node's API: the one decision per request, from its headers, its client address and the keys.

Pure: the keyring and `now` are passed in; the HTTP side (api/access.py) reads headers and answers. The rules, in
the order they are checked:

1. The client address's limits (`AddressLimits`: requests per minute and in flight), for clients not on this
   machine only (loopback is this machine's own agents and tools). Checked first, so guessing keys from one
   address is rate limited too. → 429 with Retry-After.
2. With keys on (a keyring exists, even an empty one): a key, from `Authorization: Bearer KEY` (OpenAI's clients)
   or `x-api-key: KEY` (Anthropic's), that is in the ring and not revoked. → 401 otherwise.
3. The key's own limits (`--rate`, `--concurrent` of `meshp2p keys create`). → 429 with Retry-After.

An admitted request holds its in-flight slots until `release(admitted)`, called once when its answer ends.
Requests that arrive through the mesh tunnel never meet the gate: they are members' requests, and the asking
node's gate already let them in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from meshp2p.access.keys import ApiKey, Keyring
from meshp2p.access.limiter import BUSY_RETRY_S, InFlight, RequestWindow

#: Per client address, for clients not on this machine (`up --rate-limit`, `--max-concurrent`).
DEFAULT_ADDRESS_RPM = 600
DEFAULT_ADDRESS_CONCURRENT = 32


@dataclass(frozen=True)
class AddressLimits:
    """Limits per client address; None: no limit of that kind. Loopback clients have none."""

    rate_rpm: int | None = DEFAULT_ADDRESS_RPM
    concurrent: int | None = DEFAULT_ADDRESS_CONCURRENT


@dataclass(frozen=True)
class Admitted:
    """A request let in: the key it used (None with keys off) and the in-flight slots it holds."""

    key: ApiKey | None
    held: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Denied:
    status: int  # 401 or 429
    message: str
    hint: str
    code: str
    retry_after_s: int | None = None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (`headers` with lower-case names): a Bearer token, else `x-api-key`."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Gate:
    def __init__(self, address_limits: AddressLimits = AddressLimits()) -> None:
        self.address_limits = address_limits
        self._window = RequestWindow()
        self._in_flight = InFlight()

    def check(self, headers: Mapping[str, str], client: str | None, keys: Keyring | None,
              now: float) -> Admitted | Denied:
        held: list[tuple[str, str]] = []
        try:
            if not is_loopback(client):
                limits = self.address_limits
                denied = self._limit(("address", client or "?"), limits.rate_rpm, limits.concurrent, now, held,
                                     who="this client address", hint="--rate-limit / --max-concurrent of `meshp2p up`")
                if denied is not None:
                    return denied
            key = None
            if keys is not None:
                text = presented_key(headers)
                key = None if text is None else keys.find(text)
                denied = _authentication(text, key)
                if denied is not None:
                    return denied
                assert key is not None
                denied = self._limit(("key", key.id), key.rate_rpm, key.concurrent, now, held,
                                     who=f"API key '{key.name}'", hint="its --rate / --concurrent")
                if denied is not None:
                    return denied
            admitted, held = Admitted(key, tuple(held)), []
            return admitted
        finally:
            for subject in held:  # slots of a request refused after it got them
                self._in_flight.release(subject)

    def release(self, admitted: Admitted) -> None:
        for subject in admitted.held:
            self._in_flight.release(subject)

    def in_flight(self, kind: str, name: str) -> int:
        return self._in_flight[(kind, name)]

    def sweep(self, now: float) -> None:
        self._window.sweep(now)

    def _limit(self, subject: tuple[str, str], rate_rpm: int | None, concurrent: int | None, now: float,
               held: list[tuple[str, str]], *, who: str, hint: str) -> Denied | None:
        if concurrent is not None:
            if not self._in_flight.acquire(subject, concurrent):
                return Denied(429, f"{who} already has {concurrent} requests in flight, its limit",
                              f"wait for one to end ({hint})", "too_many_concurrent", BUSY_RETRY_S)
            held.append(subject)
        if rate_rpm is not None:
            wait = self._window.admit(subject, rate_rpm, now)
            if wait is not None:
                return Denied(429, f"{who} made {rate_rpm} requests in the last minute, its limit",
                              f"retry in {wait} s ({hint})", "rate_limited", wait)
        return None


def _authentication(text: str | None, key: ApiKey | None) -> Denied | None:
    if text is None:
        return Denied(401, "this node asks for an API key", "send it as `Authorization: Bearer KEY` or "
                      "`x-api-key: KEY`; `meshp2p keys create` on the node makes one", "missing_api_key")
    if key is None:
        return Denied(401, "the API key is not valid here", "check the key; `meshp2p keys list` on the node shows "
                      "its keys", "invalid_api_key")
    if key.revoked:
        return Denied(401, f"the API key '{key.name}' was revoked", "ask the node's owner for a new one "
                      "(`meshp2p keys create`)", "revoked_api_key")
    return None
