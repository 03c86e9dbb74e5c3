"""Error root of seqstream.

    SeqstreamError            every error raised on purpose by seqstream
    └── SchemaError           a record failed validation; ``reason`` is one line for a dead letter
"""


class SeqstreamError(Exception):
    """Root of every error seqstream raises on purpose."""


class SchemaError(SeqstreamError, ValueError):
    """A record does not match its schema. ``str(err)`` is the human-readable reason."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
