"""Domain errors: a rule said no."""


class DomainError(Exception):
    """Base of every domain rule violation."""


class InvalidTransition(DomainError):
    """The aggregate cannot go from its current state to the one asked for."""
