"""The multi-expert query encoder: one base model in memory, LoRA query experts applied per call.

``encode(texts, expert)`` runs one expert; ``encode_each(texts, experts)`` takes one expert name per text and
runs each expert once over its group. The reserved expert ``base`` is the plain base model (which also encodes
every document). Expert choice is per call and per thread (``retriever.encoding.lora.active_expert``), never global.

Routed search reuses the base pass (``encode_keeping`` then ``resume``): an expert whose LoRA starts at layer L
(a shared-prefix expert, ``TrainConfig.lora_layers``) leaves layers below L as the base's, so the base pass keeps
the hidden states entering layer L and the expert runs only layers L.. and the pooling. The routed rows of
every base batch are regrouped by length and go through those layers in one mixed pass, each row with its own
expert's factors (``retriever.encoding.lora.active_rows``). With ``stop`` the base pass runs only the shared prefix, and
``resume(..., base_from=stop)`` takes base-routed rows through the rest too (routing on a prefix space). The vectors
equal a full pass of each expert to float rounding
(``tests/test_prefix.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retriever.encoding.encoder import BASE, BASE_EXPERT, Encoder
from retriever.encoding.lora import active_expert, active_rows, adapted_layers, attach_adapter, detach_adapter

__all__ = ["BASE", "BASE_EXPERT", "MultiExpertEncoder"]


def length_batches(lengths: Sequence[int], size: int, floor: int) -> list[range]:
    """Cut rows sorted longest first (their ``lengths``) into batches of at most ``size`` in which no row is shorter
    than half its batch's longest, unless that longest is within ``floor``: a batch pads every row to its longest, so
    one long query among short ones would multiply their cost (a 250-token argument among 10-token questions)."""
    batches, first = [], 0
    for i, n in enumerate(lengths):
        if i - first == size or (i > first and lengths[first] > floor and 2 * n < lengths[first]):
            batches.append(range(first, i))
            first = i
    return batches + [range(first, len(lengths))] if len(lengths) else batches


def _lengths(mask) -> list[int]:
    """Per row of an attention mask, the tokens up to its last unmasked position (what trimming its padding must
    keep), read in one transfer."""
    import torch

    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return [max(1, n) for n in (mask.bool() * positions).max(dim=1).values.tolist()]


@dataclass
class KeptStates:
    """What ``encode_keeping`` keeps of a base pass: per batch, its rows (indexes into the texts), attention
    mask, and hidden states entering each kept layer."""

    batches: list[tuple[np.ndarray, object, dict[int, object]]]
    count: int


class MultiExpertEncoder:
    BATCH = 32
    FLOOR_TOKENS, FLOOR_CHARS = 32, 128  # batches whose longest row is within these are not cut by length

    def __init__(self, base: Encoder):
        if base.precision != "fp32":  # queries: fp32, so routed vectors equal evaluation's full passes
            raise ValueError(f"query experts need an fp32 base encoder, got precision {base.precision!r}")
        self.base = base
        self._experts: set[str] = set()
        self._start: dict[str, int] = {}  # expert -> first layer its LoRA changes

    @property
    def info(self):
        return self.base.info

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def names(self) -> list[str]:
        """Every expert that can encode, ``base`` first."""
        return [BASE_EXPERT, *sorted(self._experts)]

    def add(self, name: str, factors: dict) -> None:
        if name == BASE_EXPERT:
            raise ValueError(f"{BASE_EXPERT!r} is reserved for the base model")
        start = min(adapted_layers(factors))
        attach_adapter(self.base.model[0].auto_model, name, factors)
        self._experts.add(name)
        self._start[name] = start

    def start_layer(self, name: str) -> int:
        """The first transformer layer expert ``name`` changes (0 for an all-layer expert)."""
        self._check(name)
        return self._start.get(name, self._layers())

    def _layers(self) -> int:
        return len(self.base.model[0].auto_model.encoder.layer)

    def encode_keeping(self, texts: Sequence[str], layers: set[int],
                       stop: int | None = None) -> tuple[np.ndarray | None, KeptStates]:
        """The base vectors of ``texts`` and, for ``resume``, the hidden states entering each of ``layers``. With
        ``stop``, only the layers below it run (the shared prefix: states entering ``stop`` are kept too, and
        there are no base vectors: ``resume`` with ``base_from=stop`` gives them)."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        st = self.base.model
        auto = st[0].auto_model
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        layers = set(layers) | ({stop} if stop is not None else set())
        kept = []
        order = np.argsort([-len(t) for t in texts], kind="stable")  # batches of similar length, as encode does
        with torch.no_grad(), active_expert(None):
            for batch in length_batches([len(texts[i]) for i in order], self.BATCH, self.FLOOR_CHARS):
                rows = order[batch.start : batch.stop]
                features = st.preprocess([texts[i] for i in rows])
                features = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in features.items()}
                hidden = auto.embeddings(input_ids=features["input_ids"],
                                         token_type_ids=features.get("token_type_ids"))
                mask = create_bidirectional_mask(config=auto.config, inputs_embeds=hidden,
                                                 attention_mask=features["attention_mask"])
                states = {}
                for i, layer in enumerate(auto.encoder.layer[:stop]):
                    if i in layers:
                        states[i] = hidden
                    hidden = layer(hidden, mask)
                if stop is None:
                    out[rows] = self._pooled(features, hidden)
                else:
                    states[stop] = hidden
                kept.append((rows, features, states))
        return (out if stop is None else None), KeptStates(kept, len(texts))

    def mean_states(self, kept: KeptStates, layer: int) -> np.ndarray:
        """Each text's hidden states entering ``layer``, mean-pooled over its tokens (what a prefix
        ``RoutingSpace`` routes on)."""
        out = np.zeros((kept.count, self.base.model[0].auto_model.config.hidden_size), dtype=np.float32)
        for rows, features, states in kept.batches:
            mask = features["attention_mask"].unsqueeze(-1).to(states[layer].dtype)
            out[rows] = ((states[layer] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).float().cpu().numpy()
        return out

    PREFIX_CHUNK = 1024  # texts whose prefix states are held at once by prefix_means

    def prefix_means(self, texts: Sequence[str], layer: int) -> np.ndarray:
        """``mean_states`` of the base model's first ``layer`` layers over ``texts`` (in chunks, so the hidden
        states held stay small)."""
        chunks = [texts[i : i + self.PREFIX_CHUNK] for i in range(0, len(texts), self.PREFIX_CHUNK)] or [[]]
        return np.concatenate([self.mean_states(self.encode_keeping(chunk, set(), stop=layer)[1], layer)
                               for chunk in chunks])

    def resume(self, kept: KeptStates, experts: Sequence[str | None], base_from: int | None = None) -> np.ndarray:
        """``experts[i]``'s vector of text ``i`` from the kept base pass (rows whose expert is None stay zero, and
        so do ``base`` rows unless ``base_from``: then they run the base layers from there, as after a prefix
        pass that stopped at ``base_from``). An expert resumes at its first adapted layer, or at ``base_from`` if
        that is lower (the layers between are the base's for it). Per start layer, the rows of every kept batch are
        regrouped: sorted by length into batches of ``BATCH`` (``length_batches``; each trimmed to its longest
        row), each batch ordered by expert so every expert's rows are one slice, then one mixed pass of the batch
        through the remaining layers."""
        import torch

        if len(experts) != kept.count:
            raise ValueError(f"{len(experts)} expert names for {kept.count} kept texts")
        out = np.zeros((kept.count, self.dim), dtype=np.float32)
        by_start: dict[int, list[tuple[int, int]]] = {}  # start layer -> (kept batch, row in it)
        for b, (rows, _, _) in enumerate(kept.batches):
            for j, i in enumerate(rows):
                if experts[i] is None or (experts[i] == BASE_EXPERT and base_from is None):
                    continue
                start = base_from if experts[i] == BASE_EXPERT else self.start_layer(experts[i])
                by_start.setdefault(start if base_from is None else min(start, base_from), []).append((b, j))
        with torch.no_grad():
            for start, members in sorted(by_start.items()):
                if any(start not in kept.batches[b][2] for b, _ in members):
                    raise ValueError(f"the base pass kept no hidden states entering layer {start}")
                lengths = {b: _lengths(kept.batches[b][1]["attention_mask"]) for b in {b for b, _ in members}}
                length = {m: lengths[m[0]][m[1]] for m in members}
                members.sort(key=lambda m: -length[m])
                for batch in length_batches([length[m] for m in members], self.BATCH, self.FLOOR_TOKENS):
                    chunk = sorted(members[batch.start : batch.stop],
                                   key=lambda m: experts[kept.batches[m[0]][0][m[1]]])
                    rows = np.array([kept.batches[b][0][j] for b, j in chunk])
                    features, hidden = self._regroup(kept, chunk, start, max(length[m] for m in chunk))
                    names = [None if experts[i] == BASE_EXPERT else experts[i] for i in rows]
                    vectors = self._through(features, hidden, start, names)
                    out[rows] = vectors
        return out

    def _regroup(self, kept: KeptStates, chunk: list[tuple[int, int]], start: int, width: int):
        """One batch of kept rows from several base batches: their hidden states entering layer ``start`` and
        their features, trimmed or zero-padded to ``width`` tokens (beyond a row's last token is padding)."""
        import torch

        source = kept.batches[chunk[0][0]][2][start]
        hidden = source.new_zeros((len(chunk), width, source.shape[-1]))
        features = {}
        for key, value in kept.batches[chunk[0][0]][1].items():
            if hasattr(value, "ndim") and value.ndim == 2:
                features[key] = value.new_zeros((len(chunk), width))
            elif not hasattr(value, "ndim"):
                features[key] = value
        for r, (b, j) in enumerate(chunk):
            batch_features, states = kept.batches[b][1], kept.batches[b][2]
            w = min(width, states[start].shape[1])
            hidden[r, :w] = states[start][j, :w]
            for key in features:
                if isinstance(features[key], torch.Tensor):
                    features[key][r, :w] = batch_features[key][j, :w]
        return features, hidden

    def _through(self, features: dict, hidden, start: int, names: list[str | None]) -> np.ndarray:
        """Layers ``start``.. and the pooling over one batch, row ``i`` with expert ``names[i]``'s factors."""
        from transformers.masking_utils import create_bidirectional_mask

        auto = self.base.model[0].auto_model
        mask = create_bidirectional_mask(config=auto.config, inputs_embeds=hidden,
                                         attention_mask=features["attention_mask"])
        with active_rows(names):
            for layer in auto.encoder.layer[start:]:
                hidden = layer(hidden, mask)
        return self._pooled(features, hidden)

    def _pooled(self, features: dict, hidden) -> np.ndarray:
        """The sentence-transformers modules after the transformer (pooling, normalisation) on ``hidden``."""
        import torch

        features = {**features, "token_embeddings": hidden}
        for module in list(self.base.model)[1:]:
            features = module(features)
        return torch.nn.functional.normalize(features["sentence_embedding"], dim=-1).float().cpu().numpy()

    def remove(self, name: str) -> None:
        self._check(name)
        if name == BASE_EXPERT:
            raise ValueError(f"{BASE_EXPERT!r} is the base model and cannot be removed")
        detach_adapter(self.base.model[0].auto_model, name)
        self._experts.discard(name)
        self._start.pop(name, None)

    def _check(self, name: str) -> None:
        if name != BASE_EXPERT and name not in self._experts:
            raise ValueError(f"unknown expert {name!r}; available: {', '.join(self.names)}")

    def encode(
        self, texts: Sequence[str], expert: str = BASE_EXPERT, *, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self._check(expert)
        with active_expert(None if expert == BASE_EXPERT else expert):
            return self.base.encode(texts, progress=progress)

    def encode_each(self, texts: Sequence[str], experts: Sequence[str]) -> np.ndarray:
        """Encode ``texts[i]`` with ``experts[i]``; each expert runs once over its group."""
        if len(texts) != len(experts):
            raise ValueError(f"{len(texts)} texts but {len(experts)} expert names")
        for name in set(experts):
            self._check(name)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(experts):
            groups.setdefault(name, []).append(i)
        for name, rows in groups.items():
            out[rows] = self.encode([texts[i] for i in rows], name)
        return out
