"""The ``SecretBox`` port's contract, run against ``PlainSecretBox`` and the real ``FernetSecretBox``."""

from __future__ import annotations

import pytest

from adapters.fernet_secret_box import FernetSecretBox
from application.ports import SecretBox
from domain.webhooks import new_webhook_secret
from tests.fakes_webhooks import PlainSecretBox


@pytest.fixture(params=["plain", "fernet"])
def box(request: pytest.FixtureRequest) -> SecretBox:
    return PlainSecretBox() if request.param == "plain" else FernetSecretBox("a key for the tests")


@pytest.mark.parametrize(
    "secret", [new_webhook_secret(), "whsec_" + "é" * 10, "x"], ids=["generated", "non-ascii", "short"]
)
def test_what_is_sealed_opens_to_the_same_secret(box: SecretBox, secret: str) -> None:
    assert box.open(box.seal(secret)) == secret


def test_a_sealed_secret_does_not_show_the_secret(box: SecretBox) -> None:
    secret = new_webhook_secret()
    sealed = box.seal(secret)

    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed


def test_what_the_box_did_not_seal_does_not_open(box: SecretBox) -> None:
    with pytest.raises(ValueError):
        box.open(new_webhook_secret())
