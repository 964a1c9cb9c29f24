"""Text classifier: a small, randomly initialised BERT (`transformers.BertForSequenceClassification`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

BERT_UNCASED_VOCAB = 30522  # bert-base-uncased WordPiece vocabulary (the seed's tokenizer)


class BertClassifier(nn.Module):
    """BertForSequenceClassification with `features(x)` and a tensor-or-dict input.

    Input: `input_ids` [B, L] long, or a mapping with `input_ids` and optionally
    `attention_mask` / `token_type_ids` (what a HF tokenizer returns). Without an explicit
    mask, positions equal to `pad_token_id` (0 in the bert-uncased vocabulary) are masked.
    """

    def __init__(self, config):
        super().__init__()
        from transformers import BertForSequenceClassification

        self.config = config
        self.model = BertForSequenceClassification(config)

    @property
    def classifier(self) -> nn.Linear:
        return self.model.classifier

    def _inputs(self, x, attention_mask, token_type_ids) -> dict[str, torch.Tensor]:
        if isinstance(x, Mapping):
            attention_mask = x.get("attention_mask", attention_mask)
            token_type_ids = x.get("token_type_ids", token_type_ids)
            x = x["input_ids"]
        if attention_mask is None:
            attention_mask = (x != self.config.pad_token_id).long()
        out = {"input_ids": x, "attention_mask": attention_mask}
        if token_type_ids is not None:
            out["token_type_ids"] = token_type_ids
        return out

    def features(self, x, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The pooled [CLS] representation [B, hidden] (Linear + tanh), the classifier's input."""
        return self.model.bert(**self._inputs(x, attention_mask, token_type_ids)).pooler_output

    def forward(self, x, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        # Same path as BertForSequenceClassification.forward: pooled -> dropout -> classifier.
        return self.classifier(self.model.dropout(self.features(x, attention_mask, token_type_ids)))


def bert_classifier(num_classes: int = 2, vocab_size: int = BERT_UNCASED_VOCAB, hidden_size: int = 256,
                    num_hidden_layers: int = 4, num_attention_heads: int = 4, intermediate_size: int = 1024,
                    max_position_embeddings: int = 512, dropout: float = 0.1) -> BertClassifier:
    """BERT-Mini sequence classifier (L=4, H=256, A=4, FFN 1024), random init; 11,171,074 params at 2 classes.

    Seed: waefrebeorn/GradRetentionNet `main.py` (seeds-spec 2(e)) fine-tunes PRETRAINED
    bert-base-uncased (110M) on IMDB / AG_NEWS at max_len 128. optirep never downloads weights and
    runs on CPU, so this is the BERT-Mini shape of Turc et al. 2019 ("Well-Read Students Learn
    Better") trained from scratch, with the bert-base-uncased vocabulary so the seed's tokenizer
    applies. This changes the task (training from scratch, not fine-tuning): accuracies are not
    comparable with the seed's. Dropout 0.1 = BERT's default (hidden and attention).
    IMDB: num_classes=2; AG_NEWS: num_classes=4.
    """
    from transformers import BertConfig

    if min(num_classes, vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
           max_position_embeddings) < 1 or hidden_size % num_attention_heads:
        raise ValueError(
            "bert_classifier: sizes must be positive and hidden_size divisible by num_attention_heads; got "
            f"hidden_size={hidden_size}, num_attention_heads={num_attention_heads}, num_classes={num_classes}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"bert_classifier: dropout must be in [0, 1), got {dropout}")
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, num_labels=num_classes,
    )
    return BertClassifier(config)
