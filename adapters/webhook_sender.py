"""``StandardWebhookSender``: Standard Webhooks v1 over HTTPS, and never into our own networks.

SSRF defence, at registration (``check_target``) and again at every send:

* ``https`` only (plain ``http`` only with ``allow_private_networks``), no credentials in the URL;
* the host is resolved once (an IP literal, including the decimal, hex, octal and short IPv4
  spellings ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, is taken as the address it
  spells) and *every* address must be globally routable: loopback, private, CGNAT, link-local (the
  cloud metadata service), multicast, reserved and documentation ranges are refused, after
  unwrapping IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo); names reserved for local use (``localhost``,
  ``*.local``, ``*.internal``…) are refused without a lookup;
* the connection goes to the address that was checked: the URL is rewritten to it, and the original
  name travels as the ``Host`` header and as TLS SNI (the certificate is verified against that name).
  There is no second DNS lookup for a rebinding resolver to answer differently;
* no redirects are followed (a 3xx is a failed try), no proxy from the environment is used, the
  whole try has one deadline (15 s by default) and at most ``max_response_bytes`` of the response
  body are read.

``allow_private_networks`` (``CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS``, development and tests only)
allows ``http`` and non-public addresses; the addresses are still resolved once and pinned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx
from standardwebhooks import Webhook

from adapters.retry import parse_retry_after
from application.errors import WebhookTargetRefused
from application.ports import WebhookMessage
from domain.webhooks import SendResult

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
USER_AGENT = "callrec-webhooks/1 (+https://www.standardwebhooks.com)"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Not globally routable, whatever a given Python's ``is_global`` says about them.
_NON_PUBLIC = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, the cloud metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]
_LOCAL_NAMES = ("localhost", "localhost.localdomain")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")
# The IPv4 spellings inet_aton accepts: 1 to 4 parts, each decimal, octal (0…) or hex (0x…).
_IPV4_SPELLING = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (as strings); [] when it does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except socket.gaierror:
            return []
        return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL host spells, if it is an IP literal in any spelling a resolver would accept."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        pass
    if _IPV4_SPELLING.match(candidate):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate.rstrip(".")))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address (None when it is one)."""
    for candidate in (embedded_ipv4(address), address):  # the carried IPv4 address says most
        if candidate is None:
            continue
        for label, flag in (
            ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local),
            ("private", candidate.is_private),
            ("multicast", candidate.is_multicast),
            ("unspecified", candidate.is_unspecified),
            ("reserved", candidate.is_reserved),
        ):
            if flag:
                return f"{address} is {label}" + (f" ({candidate})" if candidate != address else "")
        if not candidate.is_global or any(candidate in net for net in _NON_PUBLIC):
            return f"{address} is not globally routable" + (f" ({candidate})" if candidate != address else "")
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and the name to present (``host``)."""

    url: httpx.URL
    host: str  # ASCII host as written (IDNA-encoded), without brackets
    port: int
    addresses: tuple[IPAddress, ...]
    literal: bool  # the host is an IP address itself

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    def pinned_url(self, address: IPAddress) -> httpx.URL:
        return self.url.copy_with(host=str(address))


class WebhookTargetPolicy:
    """Decides whether a webhook URL may be used, resolving its host exactly once."""

    def __init__(self, *, allow_private_networks: bool = False, resolver: Resolver | None = None) -> None:
        self.allow_private_networks = allow_private_networks
        self.resolver = resolver or SystemResolver()

    def parse(self, raw: str) -> httpx.URL:
        if len(raw) > MAX_URL_LENGTH:
            raise WebhookTargetRefused(f"url: longer than {MAX_URL_LENGTH} characters")
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise WebhookTargetRefused(f"url: not a valid URL ({exc})") from None
        schemes = ("https", "http") if self.allow_private_networks else ("https",)
        if url.scheme not in schemes:
            raise WebhookTargetRefused(f"url: must be {' or '.join(schemes)}")
        if not url.raw_host:
            raise WebhookTargetRefused("url: has no host")
        if url.userinfo:
            raise WebhookTargetRefused("url: must not carry credentials")
        if url.fragment:
            raise WebhookTargetRefused("url: must not have a fragment")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise WebhookTargetRefused("url: the port must be from 1 to 65535")
        return url

    async def resolve(self, raw: str) -> Target:
        """Parse, resolve once and check every address; raises ``WebhookTargetRefused``."""
        url = self.parse(raw)
        host = url.raw_host.decode("ascii").strip("[]").rstrip(".").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = ip_literal(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            if not self.allow_private_networks and (host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES)):
                raise WebhookTargetRefused(f"url: {host} is a name for local use only")
            resolved = await self.resolver.resolve(host, port)
            addresses = []
            for value in resolved:
                try:
                    addresses.append(ipaddress.ip_address(value))
                except ValueError:
                    continue
            if not addresses:
                raise WebhookTargetRefused(f"url: {host} does not resolve")
        for address in addresses:
            reason = "it cannot be reached" if address.is_unspecified or address.is_multicast else None
            if reason is None and not self.allow_private_networks:
                reason = non_public_reason(address)
            if reason is None:
                continue
            if literal is not None:
                raise WebhookTargetRefused(f"url: {host} is not a public internet address: {reason}")
            # What a name resolves to stays in our log: telling the caller would let an org admin map
            # the internal names this service can resolve.
            log.info("webhook url refused: %s resolves to %s (%s)", host, address, reason)
            raise WebhookTargetRefused(f"url: {host} does not resolve to a public internet address")
        return Target(url=url, host=host, port=port, addresses=tuple(addresses), literal=literal is not None)


def signature_header(secrets: Sequence[str], message_id: str, timestamp: datetime, body: bytes) -> str:
    """``v1,<sig>`` for each secret, space-separated (Standard Webhooks), by the reference library."""
    # The library reads the timestamp with ``replace(tzinfo=utc)``: it must be UTC already.
    timestamp = timestamp.astimezone(UTC)
    payload = body.decode("utf-8")
    return " ".join(Webhook(secret).sign(message_id, timestamp, payload) for secret in secrets)


def _direct_transport(ssl_context: ssl.SSLContext) -> httpx.AsyncBaseTransport:
    # A fresh transport per try: no pooled connection made for one name is reused for another.
    return httpx.AsyncHTTPTransport(verify=ssl_context, retries=0, http2=False)


class StandardWebhookSender:
    """Implements ``WebhookSender``: checks, signs and POSTs one message (see the module docstring)."""

    def __init__(
        self,
        *,
        allow_private_networks: bool = False,
        resolver: Resolver | None = None,
        timeout_s: float = 15.0,
        max_response_bytes: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        wall_clock: Callable[[], float] = time.time,
        transport_factory: Callable[[ssl.SSLContext], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``wall_clock`` dates the signature (``webhook-timestamp``): receivers compare it with their
        own clock, so it is the real time even when the schedule runs on another clock.
        ``transport_factory`` stands in for the network in tests."""
        self.policy = WebhookTargetPolicy(allow_private_networks=allow_private_networks, resolver=resolver)
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.wall_clock = wall_clock
        self.transport_factory = transport_factory or _direct_transport

    @property
    def allow_private_networks(self) -> bool:
        return self.policy.allow_private_networks

    async def check_target(self, url: str) -> None:
        await self.policy.resolve(url)

    async def send(self, message: WebhookMessage) -> SendResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self.policy.resolve(message.url)
                for address in target.addresses[:-1]:  # every one of them was checked
                    try:
                        return await self._post(target, address, message, elapsed_ms)
                    except httpx.ConnectError:
                        continue
                return await self._post(target, target.addresses[-1], message, elapsed_ms)
        except WebhookTargetRefused as exc:
            return SendResult(None, elapsed_ms(), error=f"refused: {exc}")
        except TimeoutError:
            return SendResult(None, elapsed_ms(), error=f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return SendResult(None, elapsed_ms(), error=f"{type(exc).__name__}: {exc}"[:500])
        except OSError as exc:
            return SendResult(None, elapsed_ms(), error=f"{type(exc).__name__}: {exc}"[:500])

    async def _post(
        self, target: Target, address: IPAddress, message: WebhookMessage, elapsed_ms: Callable[[], int]
    ) -> SendResult:
        timestamp = datetime.fromtimestamp(int(self.wall_clock()), UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature_header(
                message.secrets, message.message_id, timestamp, message.body
            ),
        }
        extensions = {}
        if not target.literal:
            headers["host"] = target.host_header
            if target.url.scheme == "https":
                extensions["sni_hostname"] = target.host
        transport = self.transport_factory(self.ssl_context)
        async with httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=self.timeout_s
        ) as client:
            request = client.build_request(
                "POST",
                target.pinned_url(address),
                content=message.body,
                headers=headers,
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            try:
                head = await self._read_capped(response)
            finally:
                await response.aclose()
        status = response.status_code
        seconds = parse_retry_after(response.headers.get("retry-after"))
        retry_after = timedelta(seconds=seconds) if seconds is not None else None
        error = None
        if not 200 <= status < 300:
            snippet = head[:200].decode("utf-8", "replace").strip()
            error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
            if 300 <= status < 400:
                error += f" (redirects are not followed: {response.headers.get('location', '')})"[:300]
        return SendResult(status, elapsed_ms(), error=error, retry_after=retry_after)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """At most ``max_response_bytes`` of the body, undecoded; the rest is never read."""
        read = bytearray()
        async for chunk in response.aiter_raw():
            read.extend(chunk[: self.max_response_bytes - len(read)])
            if len(read) >= self.max_response_bytes:
                break
        return bytes(read)
