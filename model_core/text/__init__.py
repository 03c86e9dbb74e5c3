"""Text item representations: item metadata -> sentence vectors -> model item table.

- :mod:`~model_core.text.items`: read item descriptions (CSV/TSV, JSONL, RecBole ``.item``).
- :mod:`~model_core.text.encoder`: offline all-MiniLM-L6-v2 encoder (needs the ``text`` extra,
  imported lazily: this package imports without it).
- :mod:`~model_core.text.cache`: content-addressed vector cache in safetensors.
- :mod:`~model_core.text.fusion`: text vectors into GRU4Rec / SASRec item tables, growing
  the vocabulary with items known only by their metadata.
"""

from model_core.text.exceptions import ItemMetadataError, TextCacheError, TextExtraMissing
from model_core.text.items import ItemMetadata, read_item_metadata

__all__ = ["ItemMetadata", "ItemMetadataError", "TextCacheError", "TextExtraMissing",
           "read_item_metadata"]
