"""The routed retriever in other libraries' shapes, above the ``RouterRetriever`` facade: each module imports its
library (an optional extra) only when used.

Tested in ``tests/test_adapters.py`` (against the real installed packages).
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "RoutedEncoder": "retriever.adapters.st_model",
    "load_routed_model": "retriever.adapters.st_model",
    "verify_export": "retriever.adapters.st_model",
})
