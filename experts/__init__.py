"""Building domain experts: LoRA adapters on the *query* side of the frozen base encoder.

- ``pairs``  — training examples from a BEIR split's qrels (positives: score >= 1) and the held-out slice.
- ``train``  — contrastive (InfoNCE) training against cached frozen-base document vectors, with peft.
- ``store``  — the experts of a router directory: save (atomic), list, remove, load into the encoder.
- ``export`` — an expert as a plain sentence-transformers model (LoRA merged).

The reserved expert ``base`` is the base model itself. Tested in ``tests/test_experts.py``.
"""

from experts.export import export_expert
from experts.pairs import Example, split_heldout, training_examples
from experts.store import ExpertStore, validate_name
from experts.train import Negatives, TrainConfig, TrainedExpert, train_expert

__all__ = [
    "Example",
    "ExpertStore",
    "Negatives",
    "TrainConfig",
    "TrainedExpert",
    "export_expert",
    "split_heldout",
    "train_expert",
    "training_examples",
    "validate_name",
]
