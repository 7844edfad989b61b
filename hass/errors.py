"""The errors hass raises on bad input, all ValueErrors so callers can catch them together."""


class CheckpointError(ValueError):
    """A draft or target checkpoint is missing, unreadable, or does not hold the expected tensors."""


class DraftMismatchError(ValueError):
    """The draft was built for a different target (hidden size, vocabulary, attention heads...)."""
