"""Model registry and architecture tests: shapes, parameter counts, features/final_linear, seed quirks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optirep import models
from optirep.models import build_model, final_linear


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_backward(model: nn.Module, out: torch.Tensor) -> None:
    out.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- registry -------------------------------------------------------------------------------

def test_available_lists_every_model():
    assert models.available() == sorted([
        "bert_classifier", "fcn_resnet50", "gpt2_25m", "grn_simplecnn", "mnist1d_mlp", "np_mlp",
        "np_small_cifar", "pw_autoencoder", "resnet18", "shakespeare_gpt",
    ])


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'; known models: .*np_mlp.*resnet18"):
        build_model("resnet19")


def test_unknown_argument_is_named():
    with pytest.raises(ValueError, match=r"model 'np_mlp' got unknown argument\(s\) \['hidden'\]; accepted: .*hidden_dim"):
        build_model("np_mlp", hidden=3)


def test_final_linear_refuses_models_without_one():
    with pytest.raises(ValueError, match="PlaneswalkerAE has no final nn.Linear"):
        final_linear(build_model("pw_autoencoder"))


# --- classifiers: features -> final_linear reproduces forward ---------------------------------

CLASSIFIERS = [
    ("np_mlp", {}, (3, 1, 28, 28), 256),
    ("mnist1d_mlp", {}, (3, 40), 256),
    ("grn_simplecnn", {"in_channels": 1, "input_size": 28}, (2, 1, 28, 28), 128),
    ("grn_simplecnn", {"in_channels": 3, "input_size": 32}, (2, 3, 32, 32), 128),
    ("np_small_cifar", {}, (2, 3, 32, 32), 256),
    ("resnet18", {"num_classes": 10}, (2, 3, 32, 32), 512),
    ("resnet18", {"num_classes": 100, "cifar_stem": True}, (2, 3, 32, 32), 512),
    ("resnet18", {"num_classes": 10, "in_channels": 1}, (2, 1, 32, 32), 512),
]


@pytest.mark.parametrize("name,kwargs,shape,dim", CLASSIFIERS, ids=lambda v: str(v))
def test_classifier_shapes_features_and_head(name, kwargs, shape, dim):
    model = build_model(name, **kwargs)
    num_classes = kwargs.get("num_classes", 10)
    x = torch.randn(*shape)
    model.eval()  # dropout off, BN on running stats: forward must equal head(features)
    feats = model.features(x)
    assert feats.shape == (shape[0], dim)
    head = final_linear(model)
    assert (head.in_features, head.out_features) == (dim, num_classes)
    torch.testing.assert_close(head(feats), model(x))
    model.train()
    out = model(x)
    assert out.shape == (shape[0], num_classes)
    assert_backward(model, out)


def test_np_mlp_matches_the_seed_parameter_count_and_layout():
    model = build_model("np_mlp")
    assert n_params(model) == 269_322  # seeds-spec 4(e)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 256), (256, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.1]


def test_seed_cnn_fc_widths():
    assert build_model("grn_simplecnn", in_channels=1, input_size=28).fc1.in_features == 3136
    assert build_model("grn_simplecnn", in_channels=3, input_size=32).fc1.in_features == 4096
    small = build_model("np_small_cifar")
    assert small.fc1.in_features == 8192 and small.dropout.p == 0.2
    with pytest.raises(ValueError, match="input_size must be a multiple of 4, got 30"):
        build_model("grn_simplecnn", input_size=30)


# --- ResNet-18 --------------------------------------------------------------------------------

def _layer4_hw(model, x):
    seen = {}
    model.eval()  # batch-1 BatchNorm on the 1x1 layer4 output only works on running stats

    def hook(module, inputs, output):
        seen["hw"] = tuple(output.shape[-2:])

    handle = model.layer4.register_forward_hook(hook)
    model(x)
    handle.remove()
    return seen["hw"]


def test_resnet18_is_torchvisions_with_new_fc():
    import torchvision

    ours = build_model("resnet18", num_classes=10).state_dict()
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = nn.Linear(512, 10)  # exactly what the seed does
    ref_sd = ref.state_dict()
    assert list(ours) == list(ref_sd)
    assert all(ours[k].shape == ref_sd[k].shape for k in ours)
    assert final_linear(build_model("resnet18")).weight.shape == (10, 512)  # the seed's fc.weight


def test_resnet18_stems_on_32x32():
    x = torch.randn(1, 3, 32, 32)
    imagenet, cifar = build_model("resnet18"), build_model("resnet18", cifar_stem=True)
    assert _layer4_hw(imagenet, x) == (1, 1)
    assert _layer4_hw(cifar, x) == (4, 4)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    # Only the stem differs: 3x3 instead of 7x7 kernels in conv1.
    assert n_params(imagenet) - n_params(cifar) == 64 * 3 * (49 - 9)


# --- Shakespeare GPT --------------------------------------------------------------------------

def test_shakespeare_gpt_parameter_count_is_the_seeds_6_68m():
    model = build_model("shakespeare_gpt")
    # 50257*64 + 32*64 + 4*(3*4*64*16 + 64*64+64 + 64*256+256 + 256*64+64 + 4*64) + 2*64 + 64*50257+50257
    assert n_params(model) == 6_684_497
    assert model.lm_head.bias is not None and model.lm_head.weight is not model.token_embedding.weight
    idx = torch.randint(0, 50257, (2, 32))
    logits = model(idx)
    assert logits.shape == (2, 32, 50257)
    assert_backward(model, model.loss(idx[:, :-1], idx[:, 1:]))


def _seed_reference_logits(model, idx):
    """The seed's forward written literally: per-head loop, tril mask, C**-0.5 with C = n_embd."""
    B, T = idx.shape
    x = model.token_embedding(idx) + model.position_embedding_table(torch.arange(T))
    tril = torch.tril(torch.ones(T, T))
    for block in model.blocks:
        h_in = block.ln1(x)
        C = h_in.shape[-1]
        outs = []
        for head in block.sa.heads:
            k, q, v = head.key(h_in), head.query(h_in), head.value(h_in)
            wei = (q @ k.transpose(-2, -1) * C ** -0.5).masked_fill(tril == 0, float("-inf"))
            outs.append(F.softmax(wei, dim=-1) @ v)
        x = x + block.sa.proj(torch.cat(outs, dim=-1))
        x = x + block.ffn(block.ln2(x))
    return model.lm_head(model.ln_f(x))


def test_shakespeare_gpt_matches_the_seeds_attention_literally():
    model = build_model("shakespeare_gpt", vocab_size=97, block_size=16)
    idx = torch.randint(0, 97, (3, 16))
    torch.testing.assert_close(model(idx), _seed_reference_logits(model, idx), rtol=1e-5, atol=1e-5)
    # Causality: changing the last token leaves every earlier position's logits unchanged.
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 97
    torch.testing.assert_close(model(idx)[:, :-1], model(idx2)[:, :-1])
    with pytest.raises(ValueError, match="sequence length 17 exceeds block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_lm_loss_is_token_cross_entropy():
    model = build_model("shakespeare_gpt", vocab_size=50, block_size=8)
    idx, tgt = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    expected = F.cross_entropy(model(idx).reshape(-1, 50), tgt.reshape(-1))
    torch.testing.assert_close(model.loss(idx, tgt), expected)


# --- transformers models (built once each) ------------------------------------------------------

def test_gpt2_25m():
    model = build_model("gpt2_25m")
    assert n_params(model) == 26_028_480
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size) == (8, 320, 5, 256, 50257)
    assert final_linear(model).weight is model.model.transformer.wte.weight  # tied
    idx = torch.randint(0, 50257, (1, 8))
    logits = model(idx)
    assert logits.shape == (1, 8, 50257)
    assert_backward(model, model.loss(idx[:, :-1], idx[:, 1:]))


def test_bert_classifier_default_size_and_small_forward():
    assert n_params(build_model("bert_classifier")) == 11_171_074
    model = build_model("bert_classifier", num_classes=4, vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    ids = torch.randint(1, 100, (2, 12))
    ids[1, 8:] = 0  # padding
    model.eval()
    feats = model.features(ids)
    assert feats.shape == (2, 32)
    torch.testing.assert_close(final_linear(model)(feats), model(ids))
    # Without a mask, pad (id 0) positions are masked: same output as an explicit mask, whatever
    # the masked tokens are.
    other = ids.clone()
    other[1, 8:] = 5
    explicit = {"input_ids": other, "attention_mask": (ids != 0).long()}
    torch.testing.assert_close(model(explicit), model(ids))
    assert not torch.allclose(model(other)[1], model(ids)[1])
    model.train()
    out = model(ids)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert final_linear(model).weight.grad is not None


def test_fcn_resnet50_segmentation():
    model = build_model("fcn_resnet50")
    assert n_params(model) == 32_957_013
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 21, 32, 32)  # per-pixel logits at the input resolution
    assert_backward(model, out)
    with pytest.raises(ValueError, match="FCNResNet50 has no final nn.Linear"):
        final_linear(model)


# --- Planeswalker autoencoder ----------------------------------------------------------------

def test_pw_autoencoder_shapes_range_and_latent():
    model = build_model("pw_autoencoder")
    assert n_params(model) == 166_952
    assert [b.to_map.out_channels for b in model.branches] == [1] * 5  # one 1-channel map per branch
    x = torch.rand(2, 3, 32, 32)
    z = model.encode(x)
    assert z.shape == (2, 5 * 8 * 8) and model.latent_dim == 320  # 3072 / 320 = 9.6x compression
    # every latent map is standardised per example (non-affine LayerNorm over the 8x8 grid)
    maps = z.reshape(2, 5, 64)
    torch.testing.assert_close(maps.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    recon = model(x)
    assert recon.shape == x.shape and recon.min() > 0 and recon.max() < 1
    torch.testing.assert_close(recon, model.decode(z))
    assert_backward(model, F.binary_cross_entropy(recon, x))


def test_pw_autoencoder_other_sizes_and_bad_resolutions():
    model = build_model("pw_autoencoder", in_channels=1, input_size=16, resolutions=[16, 4], latent_size=4, features=8)
    assert model(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert model.encode(torch.rand(1, 1, 16, 16)).shape == (1, 2 * 16)
    with pytest.raises(ValueError, match=r"resolutions must be input_size / 2\*\*k; got \[32, 12\]"):
        build_model("pw_autoencoder", resolutions=[32, 12])
