"""``StandardWebhookSender`` against real sockets on loopback: signing, SSRF refusals, DNS rebinding,
no redirects, timeouts, capped reads, TLS with the original name as SNI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from adapters.webhook_sender import StandardWebhookSender, WebhookTargetPolicy
from application.errors import WebhookTargetRefused
from application.ports import WebhookMessage
from domain.webhooks import new_webhook_secret
from tests.support.services import free_port
from tests.support.webhook_receiver import Reply, TcpCanary, WebhookReceiver, webhook_receiver

PUBLIC = "93.184.215.14"  # globally routable; never actually connected to (see RebindingNetwork)


class ScriptedResolver:
    """A DNS server under an attacker's control: each lookup gets the next answer (the last repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class RebindingNetwork(httpx.AsyncBaseTransport):
    """The network as a careless sender would meet it: a host name is looked up again with the same
    rebinding DNS; public addresses answer 200 without leaving the machine; loopback is real."""

    def __init__(self, resolver: ScriptedResolver) -> None:
        self.resolver = resolver
        self.public_requests: list[httpx.Request] = []
        self.real = httpx.AsyncHTTPTransport(retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = ipaddress.ip_address((await self.resolver.resolve(host, request.url.port or 443))[0])
        if address.is_global:
            self.public_requests.append(request)
            return httpx.Response(200, stream=httpx.ByteStream(b""))
        pinned = request.url.copy_with(scheme="http", host=str(address))
        return await self.real.handle_async_request(
            httpx.Request(request.method, pinned, headers=request.headers, content=request.content)
        )


def message(
    url: str, *secrets: str, body: bytes = b'{"type":"call.ended","data":{"n":"\xc3\xa9"}}'
) -> WebhookMessage:
    return WebhookMessage(url=url, message_id="msg_1", body=body, secrets=secrets)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def canary() -> Iterator[TcpCanary]:
    running = TcpCanary()
    yield running
    running.close()


def loopback_sender(**kwargs: object) -> StandardWebhookSender:
    return StandardWebhookSender(allow_private_networks=True, **kwargs)  # type: ignore[arg-type]


# --- signing ------------------------------------------------------------------------------------


async def test_every_delivery_verifies_with_the_reference_library_and_the_body_is_the_signed_one(
    receiver: WebhookReceiver,
) -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    body = b'{"type":"call.ended","timestamp":"2026-11-02T15:00:00Z","data":{"name":"Zo\xc3\xab"}}'
    result = await loopback_sender().send(message(receiver.url(), new, old, body=body))
    assert result.status_code == 204 and result.error is None
    [got] = receiver.received
    assert got.body == body  # byte for byte
    for secret in (old, new):  # during a rotation either secret verifies
        Webhook(secret).verify(got.body, got.headers)
    assert got.headers["webhook-id"] == "msg_1"
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    from datetime import UTC, datetime

    from adapters.webhook_sender import signature_header

    # The vector published with the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    timestamp = datetime.fromtimestamp(1614265330, UTC)
    body = b'{"test": 2432232314}'
    assert signature_header([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


# --- SSRF ---------------------------------------------------------------------------------------

REFUSED = [
    "https://127.0.0.1:{port}/hook",
    "https://localhost:{port}/hook",
    "https://[::1]:{port}/hook",
    "https://[::ffff:127.0.0.1]:{port}/hook",
    "https://[64:ff9b::7f00:1]:{port}/hook",
    "https://0x7f000001:{port}/hook",
    "https://2130706433:{port}/hook",
    "https://0177.0.0.1:{port}/hook",
    "https://127.1:{port}/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/hook",
    "https://10.0.0.5/hook",
    "https://[fd00::1]/hook",
    "https://[fe80::1]/hook",
    "https://[2002:7f00:1::1]/hook",
    "https://0.0.0.0:{port}/hook",
    "https://metadata.google.internal/computeMetadata/v1/",
    "http://hooks.example.com/hook",
    "ftp://hooks.example.com/hook",
    "https://user:password@hooks.example.com/hook",
]


@pytest.mark.parametrize("template", REFUSED)
async def test_a_strict_sender_refuses_non_public_and_non_https_targets(
    template: str, canary: TcpCanary
) -> None:
    url = template.format(port=canary.port)
    resolver = ScriptedResolver([PUBLIC])  # any name looked up "resolves" publicly: the check is the URL's
    sender = StandardWebhookSender(resolver=resolver)
    with pytest.raises(WebhookTargetRefused):
        await sender.check_target(url)
    result = await sender.send(message(url, new_webhook_secret()))
    assert result.status_code is None and result.error is not None and result.error.startswith("refused")
    assert canary.hits == 0


@pytest.mark.parametrize(
    "answers",
    [["10.0.0.5"], ["127.0.0.1"], ["169.254.169.254"], [PUBLIC, "192.168.1.10"], ["::1"], ["fd00::2"], []],
)
async def test_a_name_resolving_to_any_non_public_address_is_refused(answers: list[str]) -> None:
    sender = StandardWebhookSender(resolver=ScriptedResolver(answers))
    with pytest.raises(WebhookTargetRefused):
        await sender.check_target("https://hooks.example.com/hook")


@pytest.mark.parametrize("answers", [["10.20.30.40"], [PUBLIC, "172.16.9.9"], ["fd00::2"], ["224.0.0.1"]])
async def test_a_refusal_never_tells_the_caller_what_a_name_resolved_to(answers: list[str]) -> None:
    sender = StandardWebhookSender(resolver=ScriptedResolver(answers))
    with pytest.raises(WebhookTargetRefused) as refused:
        await sender.check_target("https://intranet.example.com/hook")
    message = str(refused.value)
    assert "intranet.example.com" in message and "public internet address" in message
    for address in answers:
        assert address not in message
    for word in ("private", "loopback", "link-local", "multicast", "reserved"):
        assert word not in message


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
async def test_a_url_with_a_port_outside_1_to_65535_is_refused(port: str) -> None:
    sender = StandardWebhookSender(resolver=ScriptedResolver([PUBLIC]))
    with pytest.raises(WebhookTargetRefused, match="port"):
        await sender.check_target(f"https://hooks.example.com:{port}/hook")


async def test_a_rebinding_resolver_never_gets_us_to_loopback(canary: TcpCanary) -> None:
    url = f"https://rebind.example.com:{canary.port}/hook"
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
    network = RebindingNetwork(resolver)
    sender = StandardWebhookSender(resolver=resolver, transport_factory=lambda _ctx: network)
    await sender.check_target(url)  # registration: the name looked public
    result = await sender.send(message(url, new_webhook_secret()))  # now it says 127.0.0.1
    assert result.status_code is None and result.error is not None and "refused" in result.error
    assert canary.hits == 0 and network.public_requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(canary: TcpCanary) -> None:
    url = f"https://rebind.example.com:{canary.port}/hook"
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])  # public once, loopback ever after
    network = RebindingNetwork(resolver)
    sender = StandardWebhookSender(resolver=resolver, transport_factory=lambda _ctx: network)
    result = await sender.send(message(url, new_webhook_secret()))
    assert result.status_code == 200
    assert resolver.lookups == ["rebind.example.com"]  # one lookup, no second one to rebind
    [request] = network.public_requests
    assert request.url.host == PUBLIC
    assert request.headers["host"] == f"rebind.example.com:{canary.port}"
    assert request.extensions["sni_hostname"] == "rebind.example.com"
    assert canary.hits == 0


# --- HTTP behaviour -----------------------------------------------------------------------------


async def test_a_redirect_is_a_failure_and_is_not_followed(
    receiver: WebhookReceiver, canary: TcpCanary
) -> None:
    receiver.script("/hook", Reply(302, headers={"Location": f"http://127.0.0.1:{canary.port}/x"}))
    result = await loopback_sender().send(message(receiver.url(), new_webhook_secret()))
    assert result.status_code == 302 and result.outcome.value == "failed"
    assert canary.hits == 0 and len(receiver.received) == 1


async def test_a_slow_receiver_times_out(receiver: WebhookReceiver) -> None:
    receiver.script("/hook", Reply(200, delay_s=2))
    started = time.monotonic()
    result = await loopback_sender(timeout_s=0.3).send(message(receiver.url(), new_webhook_secret()))
    assert time.monotonic() - started < 1.5
    assert result.status_code is None and result.error is not None and "timed out" in result.error


async def test_an_endless_response_body_is_read_only_up_to_the_cap(receiver: WebhookReceiver) -> None:
    receiver.script("/hook", Reply(500, endless=True))
    started = time.monotonic()
    result = await loopback_sender(max_response_bytes=1000).send(
        message(receiver.url(), new_webhook_secret())
    )
    assert time.monotonic() - started < 5
    assert result.status_code == 500 and result.error is not None and len(result.error) < 300


async def test_retry_after_is_passed_on(receiver: WebhookReceiver) -> None:
    receiver.script("/hook", Reply(429, headers={"Retry-After": "120"}))
    result = await loopback_sender().send(message(receiver.url(), new_webhook_secret()))
    assert result.status_code == 429 and result.retry_after == dt.timedelta(seconds=120)


async def test_unreachable_receivers_are_failed_tries_not_errors() -> None:
    port = free_port()  # nothing listens there
    result = await loopback_sender().send(message(f"http://127.0.0.1:{port}/hook", new_webhook_secret()))
    assert result.status_code is None and result.error is not None


# --- TLS ----------------------------------------------------------------------------------------


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """A server context with a certificate for ``name``, a client context trusting it, and the SNI names
    the server saw."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    seen: list[str] = []
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    server.sni_callback = lambda _sock, server_name, _ctx: seen.append(server_name or "") or None  # type: ignore[func-returns-value]
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client, seen


async def test_tls_goes_to_the_pinned_address_with_the_original_name_as_sni_and_host(tmp_path: Path) -> None:
    server_ctx, client_ctx, seen = self_signed(tmp_path, "hooks.test")
    with webhook_receiver(ssl_context=server_ctx) as receiver:
        resolver = ScriptedResolver(["127.0.0.1"])
        sender = loopback_sender(resolver=resolver, ssl_context=client_ctx)
        secret = new_webhook_secret()
        result = await sender.send(message(f"https://hooks.test:{receiver.port}/hook", secret))
        assert result.status_code == 204, result.error
        [got] = receiver.received
        assert got.headers["host"] == f"hooks.test:{receiver.port}"
        Webhook(secret).verify(got.body, got.headers)
    assert seen == ["hooks.test"]


async def test_tls_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    server_ctx, client_ctx, _ = self_signed(tmp_path, "other.test")
    with webhook_receiver(ssl_context=server_ctx) as receiver:
        sender = loopback_sender(resolver=ScriptedResolver(["127.0.0.1"]), ssl_context=client_ctx)
        result = await sender.send(message(f"https://hooks.test:{receiver.port}/hook", new_webhook_secret()))
    assert result.status_code is None and result.error is not None
    assert receiver.received == []


def test_the_permissive_policy_allows_http_and_loopback_only_when_asked() -> None:
    assert WebhookTargetPolicy(allow_private_networks=True).parse("http://127.0.0.1:9/x").scheme == "http"
    with pytest.raises(WebhookTargetRefused):
        WebhookTargetPolicy().parse("http://127.0.0.1:9/x")


async def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(
    receiver: WebhookReceiver,
) -> None:
    resolver = ScriptedResolver(["::1", "127.0.0.1"])  # nothing listens on [::1] at the receiver's port
    sender = loopback_sender(resolver=resolver)
    result = await sender.send(message(f"http://hooks.test:{receiver.port}/hook", new_webhook_secret()))
    assert result.status_code == 204, result.error
    assert resolver.lookups == ["hooks.test"]
    assert receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"
