"""Language-modelling and text-classification data: the real offline mirror and parquet fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from optirep.data import FetchError, fetch, load
from optirep.data.text import gpt2_bpe
from test_data_fixtures import REPO, files_under, real_mirror

MIRROR = real_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="offline mirror <repo>/../shared/datasets not present")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


@needs_mirror
def test_tinyshakespeare_gpt2_from_real_mirror(tmp_path):
    s = load("tinyshakespeare", root=tmp_path, mirror=MIRROR)
    tok = gpt2_bpe(tmp_path, None)  # fetched (and verified) from the mirror by load
    assert tok.encode("First Citizen: Before we proceed").ids == [5962, 22307, 25, 7413, 356, 5120]
    assert s.train.dtype == torch.long and s.train.ndim == 1
    # 338025 GPT-2 tokens; first int(0.9 n) train, the rest val (the seed's split)
    assert len(s.train) + len(s.val) == 338025 and len(s.train) == 304222
    assert s.train[:6].tolist() == [5962, 22307, 25, 198, 8421, 356]
    assert s.info["vocab_size"] == 50257 and s.info["kind"] == "lm" and s.info["test_is_val"]
    assert torch.equal(s.test, s.val)
    assert (tmp_path / "tinyshakespeare" / "tokens.gpt2.npy").is_file()
    cached = load("tinyshakespeare", root=tmp_path)  # no mirror needed once fetched
    assert torch.equal(cached.val, s.val)
    chars = load("tinyshakespeare", root=tmp_path, tokenizer="char", train_fraction=0.5)
    assert chars.info["vocab_size"] == 65 and len(chars.val) == 1115394 - int(1115394 * 0.9)
    assert len(chars.train) == int(1115394 * 0.9) // 2
    assert "".join(chars.info["itos"][i] for i in chars.train[:13].tolist()) == "First Citizen"


@needs_mirror
def test_fetch_module_cli_with_real_mirror(tmp_path):
    env = {**os.environ, "OPTIREP_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "optirep.data.fetch", "tinyshakespeare", "--mirror", str(MIRROR),
                           "--root", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)) == [
        "gpt2/.complete", "gpt2/merges.txt", "gpt2/vocab.json", "tinyshakespeare/.complete", "tinyshakespeare/input.txt"]


@needs_mirror
def test_gpt2_vocab_checked_by_content(tmp_path):
    bad = tmp_path / "mirror" / "gpt2"
    bad.mkdir(parents=True)
    shutil.copy(MIRROR / "gpt2" / "merges.txt", bad / "merges.txt")
    (bad / "vocab.json").write_text('{"!": 0}')
    with pytest.raises(FetchError, match=r"content check failed for vocab\.json .*expected a JSON object with 50257 entries"):
        fetch("gpt2", tmp_path / "root", tmp_path / "mirror")
    assert files_under(tmp_path / "root") == []


def _parquet(path, **cols):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def test_wikitext_parquet_mirror_char(tmp_path):
    m = tmp_path / "mirror" / "wikitext2"
    lines = {"train": ["", " = Valkyria = \n", " abc def \n"] * 20, "validation": [" ghi \n"], "test": [" jkl mno \n"]}
    for split, rows in lines.items():
        _parquet(m / f"{split}-00000-of-00001.parquet", text=rows)
    s = load("wikitext2", root=tmp_path / "root", mirror=tmp_path / "mirror", tokenizer="char")
    itos = s.info["itos"]
    decode = lambda t: "".join(itos[i] for i in t.tolist())  # noqa: E731
    assert decode(s.train) == "".join(lines["train"]) and decode(s.test) == " jkl mno \n"
    assert decode(s.val) == " ghi \n" and not s.info["test_is_val"]
    assert (tmp_path / "root" / "wikitext2" / ".complete").is_file()
    if MIRROR is not None:  # GPT-2 BPE, line by line
        (tmp_path / "mirror" / "gpt2").symlink_to(MIRROR / "gpt2")
        g = load("wikitext2", root=tmp_path / "root", mirror=tmp_path / "mirror")
        assert g.test.tolist() == [474, 41582, 285, 3919, 220, 198]
        assert g.train[:12].tolist() == [796, 569, 18354, 7496, 796, 220, 198, 450, 66, 825, 220, 198]
        assert g.info["vocab_size"] == 50257 and len(g.train) == 20 * 12


def test_hf_mirror_missing_split_and_column(tmp_path):
    m = tmp_path / "mirror" / "wikitext2"
    _parquet(m / "train-00000-of-00001.parquet", text=["a"])
    with pytest.raises(FetchError, match=r"validation-00000-of-00001\.parquet"):
        fetch("wikitext2", tmp_path / "root", tmp_path / "mirror")
    _parquet(tmp_path / "mirror" / "ag_news" / "train-00000-of-00001.parquet", text=["a"])
    _parquet(tmp_path / "mirror" / "ag_news" / "test-00000-of-00001.parquet", text=["a"])
    with pytest.raises(FetchError, match=r"ag_news: train-00000-of-00001\.parquet lacks columns \['label'\]"):
        fetch("ag_news", tmp_path / "root", tmp_path / "mirror")
    assert files_under(tmp_path / "root") == []


def _news(tmp_path, n_train=40, n_test=8):
    m = tmp_path / "mirror" / "ag_news"
    texts = [f"Story {i} about topic {i % 4}: Stocks rose" for i in range(n_train)]
    _parquet(m / "train-00000-of-00001.parquet", text=texts, label=[i % 4 for i in range(n_train)])
    _parquet(m / "test-00000-of-00001.parquet", text=texts[:n_test], label=[i % 4 for i in range(n_test)])
    return texts


def test_text_classification_byte_and_wordpiece(tmp_path):
    texts = _news(tmp_path)
    s = load("ag_news", root=tmp_path / "root", mirror=tmp_path / "mirror", tokenizer="byte", max_len=16, val_size=8)
    assert s.train.x.shape == (32, 16) and s.train.x.dtype == torch.long and s.val.x.shape == (8, 16)
    assert s.test.x[0].tolist() == [b + 1 for b in texts[0].encode()[:16]]
    assert s.info["num_classes"] == 4 and s.info["pad_id"] == 0 and s.info["kind"] == "text"
    assert torch.bincount(s.val.y).tolist() == [2, 2, 2, 2]
    vocab = tmp_path / "vocab.txt"
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "story", "stocks", "rose", "about", "topic", ":"]
    vocab.write_text("\n".join(words) + "\n")
    w = load("ag_news", root=tmp_path / "root", tokenizer=str(vocab), max_len=8)
    ids = {t: i for i, t in enumerate(words)}
    assert w.test.x[0].tolist() == [ids["[CLS]"], ids["story"], ids["[UNK]"], ids["about"], ids["topic"], ids["[UNK]"], ids[":"], ids["[SEP]"]]
    short = load("ag_news", root=tmp_path / "root", tokenizer=str(vocab), max_len=16).test.x[0]
    assert short[-1].item() == 0 and (short == ids["[SEP]"]).sum() == 1


def test_text_default_tokenizer_offline_names_vocab(tmp_path):
    _news(tmp_path)
    with pytest.raises(FetchError, match=r"vocab\.txt .* at .*bert-base-uncased/vocab\.txt"):
        load("ag_news", root=tmp_path / "root", mirror=tmp_path / "mirror")


def test_text_subset_deterministic(tmp_path):
    _news(tmp_path, n_train=80)
    kw = dict(root=tmp_path / "root", mirror=tmp_path / "mirror", tokenizer="byte", max_len=8)
    a, b = load("ag_news", seed=3, per_class=5, **kw), load("ag_news", seed=3, per_class=5, **kw)
    assert torch.equal(a.train.x, b.train.x) and torch.bincount(a.train.y).tolist() == [5] * 4
    assert np.array_equal(a.val.y.numpy(), load("ag_news", seed=4, per_class=5, **kw).val.y.numpy())
