"""The one training command on the text tasks (WikiText LM, AG_NEWS classification), through the
real parquet loaders on fixtures the test writes (the study's full-scale data needs a download)."""

from __future__ import annotations

import math

import pytest

from optirep import config
from optirep.train import train

pq = pytest.importorskip("pyarrow.parquet")


def _parquet(path, **cols):
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def _experiment(task: dict, label: dict) -> dict:
    return {"name": "text", "scale": "unit test, CPU", "seeds": [0], "device": "cpu", "threads": 1,
            "tasks": {"t": {**task, "optimizers": ["o"]}}, "optimizers": {"o": label}}


def _run(tmp_path, exp: dict) -> dict:
    path = tmp_path / "exp.yaml"
    path.write_text(config.yaml.safe_dump(exp))
    cfg = config.load_experiment(path)
    run = config.resolve_run(cfg, "t", "o", 0)
    return train(run, tmp_path / "run", data_root=str(tmp_path / "root"), mirror=str(tmp_path / "mirror"), quiet=True)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")


def test_wikitext_gpt2_lm_trains_through_the_one_command(tmp_path):
    m = tmp_path / "mirror" / "wikitext2"
    text = [" = Valkyria Chronicles = \n", " the game is a tactical role playing game . \n"] * 40
    for split, rows in {"train": text, "validation": text[:8], "test": text[8:16]}.items():
        _parquet(m / f"{split}-00000-of-00001.parquet", text=rows)
    rec = _run(tmp_path, _experiment(
        {"dataset": "wikitext2", "data_args": {"tokenizer": "char"}, "model": "gpt2_25m",
         "model_args": {"n_positions": 16, "n_embd": 32, "n_layer": 1, "n_head": 2},
         "objective": "lm", "batch_size": 8, "steps": 6, "eval_every": 3, "eval_batches": 2, "metric": "perplexity"},
        {"name": "adamw", "hp": {"lr": 3.0e-3}}))
    assert not rec["diverged"] and rec["steps"] == 6
    assert math.isfinite(rec["final_test"]) and rec["extra"]["test_split"] == "test"
    assert rec["final_test"] < rec["extra"]["train_ppl"] * 10  # a finite, sane perplexity


def test_ag_news_bert_classifier_trains_through_the_one_command(tmp_path):
    m = tmp_path / "mirror" / "ag_news"
    texts = [f"Story {i} about topic {i % 4}: Stocks rose" for i in range(48)]
    _parquet(m / "train-00000-of-00001.parquet", text=texts, label=[i % 4 for i in range(48)])
    _parquet(m / "test-00000-of-00001.parquet", text=texts[:8], label=[i % 4 for i in range(8)])
    rec = _run(tmp_path, _experiment(
        {"dataset": "ag_news", "data_args": {"tokenizer": "byte", "max_len": 16, "val_size": 8},
         "model": "bert_classifier",
         "model_args": {"num_classes": 4, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 16},
         "objective": "classification", "batch_size": 8, "steps": 6, "eval_every": 3, "metric": "accuracy",
         "features": 8},
        {"name": "sgd", "hp": {"lr": 0.05, "momentum": 0.9}}))
    assert not rec["diverged"] and 0.0 <= rec["final_test"] <= 1.0
    assert rec["final_linear_key"] is not None
