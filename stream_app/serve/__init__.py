"""Serving on request: recommendations and re-ranking from the live state (HTTP)."""
