"""Recommender models and their registry.

``MODELS`` maps a model name to its class; :func:`create_model` builds an untrained model
(train it with :func:`model_core.train.train_model`). Every model satisfies
:class:`model_core.predictor.Recommender`.
"""

from __future__ import annotations

from model_core.models.base import (
    CountingRecommender,
    NegativeSampler,
    NeuralRecommender,
    SequenceModule,
    StatefulMixin,
)
from model_core.models.data import SeqData, as_seqdata
from model_core.models.gru4rec import GRU4Rec, GRU4RecModule
from model_core.models.item_embedding import InputEncoder, ItemEmbedding
from model_core.models.itemknn import ItemKNNRecommender
from model_core.models.markov import MarkovRecommender
from model_core.models.popular import PopularRecommender
from model_core.models.sasrec import SASRec, SASRecModule
from model_core.models.sknn import (
    SKNNRecommender,
    STANRecommender,
    VSKNNRecommender,
    VSTANRecommender,
)
from model_core.vocab import ItemVocab

MODELS: dict[str, type] = {
    "popular": PopularRecommender,
    "markov": MarkovRecommender,
    "itemknn": ItemKNNRecommender,
    "sknn": SKNNRecommender,
    "vsknn": VSKNNRecommender,
    "stan": STANRecommender,
    "vstan": VSTANRecommender,
    "gru4rec": GRU4Rec,
    "sasrec": SASRec,
}
NEURAL_MODELS = ("gru4rec", "sasrec")


def create_model(name: str, vocab: ItemVocab, device: str = "cpu", seed: int = 0, **config):
    """An untrained model ``name`` over ``vocab``; ``config`` = its hyper-parameters."""
    cls = MODELS.get(name)
    if cls is None:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    from model_core.device import resolve_device

    return cls(vocab, config, device=resolve_device(device), seed=seed)


__all__ = [
    "MODELS",
    "NEURAL_MODELS",
    "CountingRecommender",
    "GRU4Rec",
    "GRU4RecModule",
    "InputEncoder",
    "ItemEmbedding",
    "ItemKNNRecommender",
    "MarkovRecommender",
    "NegativeSampler",
    "NeuralRecommender",
    "PopularRecommender",
    "SASRec",
    "SASRecModule",
    "SKNNRecommender",
    "STANRecommender",
    "SeqData",
    "SequenceModule",
    "StatefulMixin",
    "VSKNNRecommender",
    "VSTANRecommender",
    "as_seqdata",
    "create_model",
]
