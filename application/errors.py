"""Application errors: what a caller can be told went wrong."""

from domain.errors import DomainError


class ApplicationError(Exception):
    """Base of errors the edge maps to a response."""

    code = "error"


class NotFound(ApplicationError):
    """No such object for this caller (another org's object is indistinguishable from a missing one)."""

    code = "not_found"


class InvalidInput(ApplicationError):
    """A request names something that is not a valid value (an unknown status, for instance)."""

    code = "invalid_request"


class UnknownNumber(ApplicationError):
    """A call came in on a number no org and no platform line owns."""

    code = "unknown_number"


class PhoneNumberTaken(ApplicationError):
    """Another organization already owns this number."""

    code = "phone_number_taken"


class ConcurrencyConflict(ApplicationError):
    """Someone else changed the aggregate between our read and our write; retry from a fresh read."""

    code = "conflict"


class IntegrityViolation(ApplicationError):
    """A write broke a rule of the schema that no race explains: a missing referenced row (foreign
    key), a missing required value (not null), a check. A bug or a bad input, never retried."""

    code = "integrity_violation"


class ArchiveVerificationFailed(ApplicationError):
    """What the store holds is not byte for byte what was downloaded. The Twilio copy stays."""

    code = "archive_verification_failed"


class RecordingGone(ApplicationError):
    """The recording's audio was purged (retention, erasure, filtered): it can never be served again."""

    code = "recording_purged"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class WebhookTargetRefused(ApplicationError):
    """A webhook URL this service must never send to (not https, or not a public internet address)."""

    code = "webhook_url_refused"


__all__ = [
    "ApplicationError",
    "ArchiveVerificationFailed",
    "ConcurrencyConflict",
    "DomainError",
    "IntegrityViolation",
    "InvalidInput",
    "NotFound",
    "PhoneNumberTaken",
    "RecordingGone",
    "UnknownNumber",
    "WebhookTargetRefused",
]
