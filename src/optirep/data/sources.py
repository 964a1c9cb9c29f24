"""Where every dataset comes from: URLs, original file names and how each file is verified.

`SOURCES` maps a name (what `optirep fetch <name>` takes) to a `Source`. A file is verified by
md5 when the upstream bytes are stable (gzip files also record the md5 of their decompressed
content, so a decompressed or recompressed copy can be verified too), otherwise by a content check (GPT-2 `vocab.json`, whose
whitespace differs between copies; the BERT vocabulary). Hugging Face datasets (WikiText, IMDB,
AG_NEWS) are verified by structure: every split present, readable, with the expected columns.
An extracted archive is checked for the members it must hold and, where a source gives one, by
`archive_check` (Pascal VOC: an image and a mask for every id of the segmentation lists).

Tests and users with a private copy override expected checksums with `override_checksums`
instead of editing this table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["RemoteFile", "Source", "SOURCES", "EMBEDDED", "override_checksums", "get_source"]


@dataclass(frozen=True)
class RemoteFile:
    """One file as published upstream.

    Attributes:
        name: the original file name; also its name in a mirror (`<mirror>/<dataset>/<name>`)
            and under the data root (`<root>/<dataset>/<name>`).
        urls: download locations tried in order.
        md5: expected md5 of the bytes, or None when `check` verifies the content instead.
        check: raises ValueError (with the reason) when the content is wrong; used when the
            bytes legitimately differ between copies.
        note: what the file is, for error messages.
        raw_md5: for a gzip file, the md5 of its decompressed content. A mirror (or the data root)
            may then hold the file in either of two more forms, both verified by this md5: the
            decompressed file under `raw_name` (the name without `.gz`), or a `.gz` recompressed by
            someone else (Debian's packages), whose bytes differ from the published ones. A
            download is verified by `md5` alone.
    """

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    check: Callable[[Path], None] | None = None
    note: str = ""
    raw_md5: str | None = None

    @property
    def raw_name(self) -> str | None:
        """The decompressed file's name (`name` without `.gz`), or None when no `raw_md5` is known."""
        return self.name[:-3] if self.raw_md5 is not None and self.name.endswith(".gz") else None

    def __post_init__(self) -> None:
        if self.md5 is None and self.check is None:
            raise ValueError(f"RemoteFile {self.name!r}: give md5 or check (or both)")


@dataclass(frozen=True)
class HFSplit:
    """One split of a Hugging Face dataset: its name and the parquet file names on the hub."""

    split: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """A fetchable dataset or tokenizer asset.

    Attributes:
        name: registry name.
        files: the upstream files (kind "files").
        archive: for a tarball, the member directory it must contain once extracted, and the
            members that directory must hold.
        archive_check: raises ValueError (with the reason) when the extracted member directory
            (its path is the argument) is incomplete; run before it is moved into place.
        hf: for kind "hf": (hub repo id, config name or None, hub folder of the parquet files).
        hf_splits: the splits fetched from the hub, each with its usual parquet file names.
        columns: columns every split of an HF dataset must have.
        requires: other sources `optirep fetch <name>` also fetches (the default tokenizer).
        homepage: where a user without this tool would get the files.
        mirror_aliases: other directory names a mirror may use for this dataset (Debian installs
            Fashion-MNIST under `/usr/share/datasets/fashion-mnist/`).
    """

    name: str
    kind: str = "files"
    files: tuple[RemoteFile, ...] = ()
    archive: tuple[str, tuple[str, ...]] | None = None
    archive_check: Callable[[Path], None] | None = None
    hf: tuple[str, str | None, str] | None = None
    hf_splits: tuple[HFSplit, ...] = ()
    columns: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    homepage: str = ""
    mirror_aliases: tuple[str, ...] = ()


def _check_gpt2_vocab(path: Path) -> None:
    """GPT-2 `vocab.json`: 50257 entries and the ids the tokenizer check relies on."""
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON object ({exc})") from None
    if not isinstance(vocab, dict) or len(vocab) != 50257:
        raise ValueError(f"expected a JSON object with 50257 entries, got {type(vocab).__name__} of {len(vocab)}")
    known = {"!": 0, "First": 5962, "\u0120Citizen": 22307, "\u0120proceed": 5120, "<|endoftext|>": 50256}
    wrong = {k: vocab.get(k) for k, v in known.items() if vocab.get(k) != v}
    if wrong:
        raise ValueError(f"unexpected ids {wrong}, expected {known}")


def _check_bert_vocab(path: Path) -> None:
    """bert-base-uncased `vocab.txt`: 30522 lines with the special tokens at their usual ids."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != 30522:
        raise ValueError(f"expected 30522 lines, got {len(lines)}")
    known = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    wrong = {i: lines[i] for i, tok in known.items() if lines[i] != tok}
    if wrong:
        raise ValueError(f"unexpected tokens at ids {wrong}, expected {known}")


def _check_voc_segmentation(devkit: Path) -> None:
    """Extracted `VOCdevkit/`: every id of the train and val segmentation lists has its JPEG and mask."""
    from optirep.data.formats import VOC_SPLITS, FormatError, voc_ids, voc_pair

    voc = devkit / "VOC2012"
    for split in VOC_SPLITS:
        try:
            ids = voc_ids(voc, split)
        except FormatError as exc:
            raise ValueError(str(exc)) from None
        missing = [p for i in ids for p in voc_pair(voc, i) if not p.is_file()]
        if missing:
            rel = [str(p.relative_to(devkit.parent)) for p in missing[:3]]
            raise ValueError(f"{len(missing)} files listed in ImageSets/Segmentation/{split}.txt are missing, "
                             f"e.g. {rel}")


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FMNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx_files(bases: tuple[str, ...], md5s: tuple[str, ...], raw_md5s: tuple[str, ...],
               what: str) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, tuple(b + n for b in bases), md5=m, raw_md5=r, note=what)
                 for n, m, r in zip(_IDX, md5s, raw_md5s, strict=True))


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "cifar10",
            files=(RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                              md5="c58f30108f718f92721af3b95e74349a", note="CIFAR-10 python version"),),
            archive=("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                             "data_batch_5", "test_batch", "batches.meta")),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        Source(
            "cifar100",
            files=(RemoteFile("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                              md5="eb9058c3a382ffc7106e4002c42a8d85", note="CIFAR-100 python version"),),
            archive=("cifar-100-python", ("train", "test", "meta")),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        Source(
            "mnist",
            # published .gz md5 (torchvision's table), then the md5 of each decompressed file
            files=_idx_files(_MNIST_URLS, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                           "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
                             ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                              "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"), "MNIST IDX"),
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        Source(
            "fashion_mnist",
            files=_idx_files(_FMNIST_URLS, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
                             ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                              "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
                             "Fashion-MNIST IDX"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            mirror_aliases=("fashion-mnist",),
        ),
        Source(
            "voc2012",
            files=(RemoteFile("VOCtrainval_11-May-2012.tar",
                              ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                               "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"),
                              md5="6cd6e144f989b92b3379bac3b3de84fd",
                              note="Pascal VOC 2012 trainval tarball, about 2 GB"),),
            archive=("VOCdevkit", ("VOC2012/ImageSets/Segmentation/train.txt",
                                   "VOC2012/ImageSets/Segmentation/val.txt")),
            archive_check=_check_voc_segmentation,
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        ),
        Source(
            "tinyshakespeare",
            files=(RemoteFile("input.txt", ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
                              md5="6fb458f1232090904fb40fe944165e91", note="tiny-shakespeare (karpathy/char-rnn)"),),
            requires=("gpt2",),
            homepage="https://github.com/karpathy/char-rnn/tree/master/data/tinyshakespeare",
        ),
        Source(
            "gpt2",
            files=(
                RemoteFile("vocab.json", ("https://huggingface.co/openai-community/gpt2/resolve/main/vocab.json",),
                           check=_check_gpt2_vocab, note="GPT-2 BPE vocabulary (checked by content: 50257 entries, known ids)"),
                RemoteFile("merges.txt", ("https://huggingface.co/openai-community/gpt2/resolve/main/merges.txt",),
                           md5="75a37753dd7a28a2c5df80c28bf06e4e", note="GPT-2 BPE merges"),
            ),
            homepage="https://huggingface.co/openai-community/gpt2",
        ),
        Source(
            "bert-base-uncased",
            files=(RemoteFile("vocab.txt", ("https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt",),
                              check=_check_bert_vocab, note="BERT uncased WordPiece vocabulary (checked by content)"),),
            homepage="https://huggingface.co/google-bert/bert-base-uncased",
        ),
        Source(
            "wikitext2", kind="hf", hf=("Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext-2-raw-v1"),
            hf_splits=(HFSplit("train", ("train-00000-of-00001.parquet",)),
                       HFSplit("validation", ("validation-00000-of-00001.parquet",)),
                       HFSplit("test", ("test-00000-of-00001.parquet",))),
            columns=("text",), requires=("gpt2",),
            homepage="https://huggingface.co/datasets/Salesforce/wikitext",
        ),
        Source(
            "wikitext103", kind="hf", hf=("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext-103-raw-v1"),
            hf_splits=(HFSplit("train", ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet")),
                       HFSplit("validation", ("validation-00000-of-00001.parquet",)),
                       HFSplit("test", ("test-00000-of-00001.parquet",))),
            columns=("text",), requires=("gpt2",),
            homepage="https://huggingface.co/datasets/Salesforce/wikitext",
        ),
        Source(
            "imdb", kind="hf", hf=("stanfordnlp/imdb", "plain_text", "plain_text"),
            hf_splits=(HFSplit("train", ("train-00000-of-00001.parquet",)),
                       HFSplit("test", ("test-00000-of-00001.parquet",))),
            columns=("text", "label"), requires=("bert-base-uncased",),
            homepage="https://huggingface.co/datasets/stanfordnlp/imdb",
        ),
        Source(
            "ag_news", kind="hf", hf=("fancyzhx/ag_news", None, "data"),
            hf_splits=(HFSplit("train", ("train-00000-of-00001.parquet",)),
                       HFSplit("test", ("test-00000-of-00001.parquet",))),
            columns=("text", "label"), requires=("bert-base-uncased",),
            homepage="https://huggingface.co/datasets/fancyzhx/ag_news",
        ),
    ]
}

#: Datasets generated from installed packages; `fetch` has nothing to do for them.
EMBEDDED = {
    "digits8": "sklearn.datasets.load_digits (ships with scikit-learn)",
    "digits32": "sklearn.datasets.load_digits upsampled to 32x32 RGB",
    "mnist1d": "generated offline by the mnist1d package (make_dataset, seed 42), cached as <root>/mnist1d/*.npz",
}


def get_source(name: str) -> Source:
    """The registry entry for `name`; an unknown name fails with the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; fetchable: {sorted(SOURCES)}, embedded: {sorted(EMBEDDED)}") from None


@contextlib.contextmanager
def override_checksums(name: str, md5: dict[str, str], raw_md5: dict[str, str] | None = None) -> Iterator[Source]:
    """Temporarily expect other md5s for some files of `name` (a private copy, a test fixture).

    `md5` maps original file names to md5 hex digests of their bytes, `raw_md5` (gzip files) to
    md5 digests of their decompressed content; names not in the source are an error.
    """
    source = get_source(name)
    raw_md5 = raw_md5 or {}
    known = {f.name for f in source.files}
    unknown = (set(md5) | set(raw_md5)) - known
    if unknown:
        raise KeyError(f"override_checksums({name!r}): unknown files {sorted(unknown)}; files: {sorted(known)}")
    files = tuple(dataclasses.replace(f, md5=md5.get(f.name, f.md5), raw_md5=raw_md5.get(f.name, f.raw_md5), check=None)
                  if f.name in md5 or f.name in raw_md5 else f for f in source.files)
    SOURCES[name] = dataclasses.replace(source, files=files)
    try:
        yield SOURCES[name]
    finally:
        SOURCES[name] = source
