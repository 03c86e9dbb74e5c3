"""Errors of the text item encoder (all derive from :class:`model_core.exceptions.ModelCoreError`).

- :class:`TextExtraMissing`: the optional ``text`` extra (tokenizer + bundled model) is absent.
- :class:`ItemMetadataError`: an item metadata file cannot be read at all (missing file, no
  header, unknown column). Single bad lines are counted, never raised.
- :class:`TextCacheError`: a text-vector cache file is unreadable or belongs to another encoder.
"""

from model_core.exceptions import DataFormatError, ModelCoreError

INSTALL_HINT = "install the text extra: pip install 'seqstream[text]'"


class TextExtraMissing(ModelCoreError):
    """The ``text`` extra is not installed."""


class ItemMetadataError(DataFormatError):
    """An item metadata file cannot be read."""


class TextCacheError(ModelCoreError):
    """A text-vector cache cannot be used."""
