"""The search service, above the ``RouterRetriever`` facade (its web stack is the ``serve`` extra).

Tested in ``tests/test_service.py`` (a real server on a loopback port).
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {})
