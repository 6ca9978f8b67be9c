"""Domain errors: a rule said no."""


class DomainError(Exception):
    """Base of every domain rule violation."""


class InvalidValue(DomainError):
    """A value outside its grammar (an identifier, a phone number, a negative duration)."""


class InvalidTransition(DomainError):
    """The aggregate cannot go from its current state to the one asked for."""
