"""Query and corpus encoding on one frozen base model: ``encoder`` (the base sentence-transformers model, offline,
normalised vectors, its fingerprint), ``lora`` (LoRA factors and the per-row adapter switch, thread-safe) and
``expert_encoder`` (``MultiExpertEncoder``: every expert on one base model, chosen per query). Imports only
``retriever.storage``. Tested in ``tests/test_experts.py`` (LoRA layers against peft) and ``tests/test_prefix.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "BASE": "retriever.encoding.expert_encoder",
    "BASE_EXPERT": "retriever.encoding.expert_encoder",
    "DEFAULT_MODEL": "retriever.encoding.encoder",
    "Encoder": "retriever.encoding.encoder",
    "ModelInfo": "retriever.encoding.encoder",
    "MultiExpertEncoder": "retriever.encoding.expert_encoder",
    "PRECISIONS": "retriever.encoding.encoder",
    "load_encoder": "retriever.encoding.encoder",
})
