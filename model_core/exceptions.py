"""Errors of model_core (all derive from :class:`schemas.SeqstreamError`)."""

from schemas.exceptions import SeqstreamError


class ModelCoreError(SeqstreamError):
    """Root of model_core errors."""


class CheckpointError(ModelCoreError):
    """A checkpoint directory is missing, incomplete or not loadable."""


class DataFormatError(ModelCoreError):
    """A log file or format name cannot be read."""
