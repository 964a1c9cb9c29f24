"""Language models: BiostatisV6's Shakespeare "GPT-1" and a ~25M-parameter GPT-2 for WikiText-103.

Both: forward(idx [B, T] long) -> logits [B, T, V]; `loss(idx, targets)` -> mean token
cross-entropy (targets are idx shifted by one, prepared by the data loader, as in the seed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GPT2_VOCAB = 50257  # GPT-2 BPE (tiktoken "gpt2" / HF gpt2 tokenizer)


def _token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class _Head(nn.Module):
    """Projections of one attention head (no bias); the attention itself runs in the block."""

    def __init__(self, n_embd: int, head_size: int):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)


class _MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.heads = nn.ModuleList(_Head(n_embd, n_embd // n_head) for _ in range(n_head))
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = torch.stack([h.query(x) for h in self.heads], dim=1)  # [B, H, T, hs]
        k = torch.stack([h.key(x) for h in self.heads], dim=1)
        v = torch.stack([h.value(x) for h in self.heads], dim=1)
        # The seed scales by C**-0.5 with C the full embedding width (64), not the head size (16):
        # its logits are 2x smaller than standard attention's. Kept on purpose.
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=C ** -0.5, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(B, T, C)  # heads concatenated in order, as torch.cat
        return self.resid_dropout(self.proj(out))


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.sa = _MultiHeadAttention(n_embd, n_head, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sa(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class ShakespeareGPT(nn.Module):
    """The seed's "BigramLanguageModel": a 4-layer pre-LN GPT with untied, biased lm_head.

    Seed: Hindolch/V6-optimizer `experiments/gpt1_adamw.py @ 0561329` (seeds-spec 1(e)).
    Architecture (defaults = the seed): token embedding V x 64 + learned position embedding
    block_size x 64; 4 blocks `x + MHA(LN(x))`, `x + FFN(LN(x))`, each with 4 heads of 16 dims
    whose q/k/v are separate bias-free Linear(64, 16) per head, scores scaled by 64**-0.5
    (the FULL width, a quirk of the seed), causal mask, output projection Linear(64, 64) with
    bias; FFN 64 -> 256 -> 64 with ReLU; final LayerNorm; lm_head Linear(64, V) with bias, NOT
    tied to the token embedding; dropout 0; PyTorch default init (the seed has no custom init).

    Parameters at V = 50257, block_size 32 (the seed prints "6.68M"): 6,684,497 =
        token emb 50257*64 = 3,216,448 + position emb 32*64 = 2,048
      + 4 blocks x 49,792 (q/k/v 3*4*64*16 = 12,288; proj 64*64+64 = 4,160;
                           FFN 64*256+256 + 256*64+64 = 33,088; two LayerNorms 256)  = 199,168
      + final LayerNorm 128 + lm_head 64*50257+50257 = 3,266,705.

    Why plain torch and not `GPT2Config`: GPT-2 scales attention by head_size**-0.5, uses GELU,
    biased fused qkv, and ties lm_head to the embedding without a bias; none of the seed's
    choices is a GPT2Config option. Each head keeps its own three q/k/v weight tensors, as in the
    seed, because per-tensor optimizer statistics (norms, means) depend on how parameters are
    split into tensors; the heads are evaluated together in one fused attention call, which is
    the same function as the seed's per-head loop + concatenation.
    """

    def __init__(self, vocab_size: int = GPT2_VOCAB, block_size: int = 32, n_embd: int = 64,
                 n_head: int = 4, n_layer: int = 4, dropout: float = 0.0):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*(_Block(n_embd, n_head, dropout) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        pos = self.position_embedding_table(torch.arange(T, device=idx.device))
        x = self.blocks(self.token_embedding(idx) + pos)
        return self.lm_head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over all B*T positions (the seed's training loss)."""
        return _token_loss(self(idx), targets)


def shakespeare_gpt(vocab_size: int = GPT2_VOCAB, block_size: int = 32, n_embd: int = 64, n_head: int = 4,
                    n_layer: int = 4, dropout: float = 0.0) -> ShakespeareGPT:
    """BiostatisV6's Shakespeare GPT (6,684,497 parameters at the seed's defaults); see ShakespeareGPT."""
    if min(vocab_size, block_size, n_embd, n_head, n_layer) < 1 or n_embd % n_head:
        raise ValueError(
            f"shakespeare_gpt: sizes must be positive and n_embd divisible by n_head; got vocab_size="
            f"{vocab_size}, block_size={block_size}, n_embd={n_embd}, n_head={n_head}, n_layer={n_layer}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"shakespeare_gpt: dropout must be in [0, 1), got {dropout}")
    return ShakespeareGPT(vocab_size, block_size, n_embd, n_head, n_layer, dropout)


class GPT2LM(nn.Module):
    """A randomly initialised `transformers.GPT2LMHeadModel` returning logits [B, T, V]."""

    def __init__(self, config):
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.config = config
        self.model = GPT2LMHeadModel(config)

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds n_positions {self.config.n_positions}")
        return self.model(input_ids=idx, use_cache=False).logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over all B*T positions."""
        return _token_loss(self(idx), targets)


def gpt2_25m(vocab_size: int = GPT2_VOCAB, n_positions: int = 256, n_embd: int = 320, n_layer: int = 8,
             n_head: int = 5, dropout: float = 0.0) -> GPT2LM:
    """GPT-2 with 26,028,480 parameters (tied embeddings) for the WikiText-103 claim (V6-7/V6-8).

    The seed gives no script, config or log for its "GPT-2 (25M)" (seeds-spec 1(e)), so this is
    optirep's choice: a standard `transformers.GPT2Config` (GELU, pre-LN, fused biased qkv,
    lm_head tied to wte, HF's N(0, 0.02) init) with the GPT-2 BPE vocabulary, context 256,
    8 layers, width 320, 5 heads of 64 dims, dropout 0 (nanoGPT's pretraining default; the
    claim is about optimisation, not regularisation). "25M" is read as the TOTAL parameter count,
    what `sum(p.numel())` prints: 16,082,240 token + 81,920 position embedding + 8 x 1,232,960
    per block + 640 final LayerNorm = 26,028,480 (9.86M non-embedding). The often-quoted
    6 x 512 x 8-head shape would be 44,777,984 in total (19.0M non-embedding), i.e. neither
    reading of 25M. Every size is a keyword argument.
    """
    from transformers import GPT2Config

    if min(vocab_size, n_positions, n_embd, n_layer, n_head) < 1 or n_embd % n_head:
        raise ValueError(
            f"gpt2_25m: sizes must be positive and n_embd divisible by n_head; got vocab_size={vocab_size}, "
            f"n_positions={n_positions}, n_embd={n_embd}, n_layer={n_layer}, n_head={n_head}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"gpt2_25m: dropout must be in [0, 1), got {dropout}")
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, tie_word_embeddings=True, use_cache=False,
    )
    return GPT2LM(config)
