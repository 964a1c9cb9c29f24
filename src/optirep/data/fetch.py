"""Download (or copy from an offline mirror) and verify a dataset under the data root.

    optirep fetch <dataset> [--root DIR] [--mirror DIR]
    python -m optirep.data.fetch <dataset> [--root DIR] [--mirror DIR]

Layout: `<root>/<dataset>/<original file name>`; archives are extracted beside their tarball;
`<root>/<dataset>/.complete` marks a dataset whose every file passed verification (its absence
means "not fetched", whatever else is there). The root defaults to `$OPTIREP_DATA` or `./data`.

A mirror (`--mirror DIR` or `$OPTIREP_DATA_MIRROR`) holds files as `<DIR>/<dataset>/<original file
name>`, e.g. `<DIR>/cifar10/cifar-10-python.tar.gz`, `<DIR>/mnist/train-images-idx3-ubyte.gz`,
`<DIR>/voc2012/VOCtrainval_11-May-2012.tar`, `<DIR>/gpt2/vocab.json`; they are verified exactly
like downloads. MNIST and Fashion-MNIST files may also be staged decompressed, under the name
without `.gz` (`<DIR>/mnist/train-images-idx3-ubyte`), or recompressed (Debian's
`dataset-fashion-mnist`: `--mirror /usr/share/datasets`, whose `fashion-mnist/` directory is
accepted for `fashion_mnist`); both are verified by the md5 of the decompressed content recorded
in `optirep.data.sources`, a download by the published `.gz` md5. A file that fails is an error
naming it, its md5 and the expected ones; the files the failed call had put in place are removed.
Hugging Face datasets take the hub's parquet files:
`<DIR>/wikitext2/{train,validation,test}-00000-of-00001.parquet`,
`<DIR>/wikitext103/train-0000{0,1}-of-00002.parquet` (+ validation, test),
`<DIR>/imdb/{train,test}-00000-of-00001.parquet`, `<DIR>/ag_news/{train,test}-00000-of-00001.parquet`
(any `<split>-*.parquet` shard names are accepted).

Offline (`OPTIREP_OFFLINE=1` or `HF_HUB_OFFLINE=1`) nothing is downloaded: a file missing from
the mirror and the root is an error that says which file to put where.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import types
import urllib.request
import uuid
import zlib
from pathlib import Path

from optirep.data.sources import EMBEDDED, SOURCES, RemoteFile, Source, get_source

__all__ = ["fetch", "main", "FetchError", "data_root", "mirror_dir", "is_offline", "md5sum", "installed"]

MARKER = ".complete"
_TRUE = {"1", "true", "yes", "on"}


class FetchError(RuntimeError):
    """A dataset file is missing, unreachable, corrupt or fails verification."""


def owner_tag() -> str:
    """`@host@pid@`: put in every temp (`.part`) name, so a later fetch can tell a killed fetch's leftovers."""
    return f"@{socket.gethostname()}@{os.getpid()}@"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_parts(dest: Path) -> list[Path]:
    """Remove the `.part` files and folders a killed fetch on this host left in `dest`; returns them.

    Only parts whose owner process (host and pid in the name, `owner_tag`) is gone are removed: a fetch
    still running here, or on another host sharing the data root, keeps its temp files.
    """
    removed = []
    host = socket.gethostname()
    for p in sorted(Path(dest).glob(".*.part")):
        m = re.search(r"@([^@/]+)@(\d+)@", p.name)
        if m is None or m.group(1) != host or _alive(int(m.group(2))):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        print(f"optirep fetch: removed {len(removed)} temp file(s) of an interrupted fetch in {dest}: "
              f"{', '.join(p.name for p in removed)}", file=sys.stderr)
    return removed


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root`, else `$OPTIREP_DATA`, else `./data`."""
    return Path(root if root is not None else os.environ.get("OPTIREP_DATA") or "data")


def mirror_dir(mirror: str | os.PathLike | None = None) -> Path | None:
    """The offline mirror: `mirror`, else `$OPTIREP_DATA_MIRROR`, else None."""
    m = mirror if mirror is not None else os.environ.get("OPTIREP_DATA_MIRROR")
    return Path(m) if m else None


def is_offline() -> bool:
    """True when `OPTIREP_OFFLINE` or `HF_HUB_OFFLINE` is set to 1/true/yes/on."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("OPTIREP_OFFLINE", "HF_HUB_OFFLINE"))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_complete(name: str, root: str | os.PathLike | None = None) -> bool:
    return (data_root(root) / name / MARKER).is_file()


def fetch(name: str, root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
          with_deps: bool = False) -> Path:
    """Make `<root>/<name>` hold the verified files of dataset `name`; return that directory.

    Args:
        name: a key of `optirep.data.sources.SOURCES` (embedded datasets need no fetch and
            return the root unchanged).
        root: data root (default `$OPTIREP_DATA` or `./data`).
        mirror: offline mirror directory (default `$OPTIREP_DATA_MIRROR`).
        with_deps: also fetch the sources `name` requires (its default tokenizer), as the CLI does.

    Raises:
        FetchError: naming the file that is missing, corrupt or unreachable and where to put it.
    """
    root_p = data_root(root)
    if name in EMBEDDED:
        return root_p
    source = get_source(name)
    mirror_p = mirror_dir(mirror)
    if with_deps:
        for dep in source.requires:
            fetch(dep, root_p, mirror_p, with_deps=True)
    dest = root_p / name
    if dest.is_dir():
        clean_stale_parts(dest)
    if (dest / MARKER).is_file():
        return dest
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    new: list[Path] = []  # files this call put in place
    try:
        if source.kind == "hf":
            record = _fetch_hf(source, dest, mirror_p)
        else:
            record = dict(_obtain(f, source, dest, mirror_p, new) for f in source.files)
            if source.archive is not None:
                _extract(dest / source.files[0].name, source, dest)
        _write_atomic(dest / MARKER, json.dumps(record, indent=1, sort_keys=True) + "\n")
    except BaseException:
        # Nothing half-done stays: the files this call installed go (a dataset is usable only whole),
        # and a directory this call created and left empty would only confuse the next run.
        for p in new:
            p.unlink(missing_ok=True)
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        raise
    return dest


# ---------------------------------------------------------------------------------- plain files


def _gunzip_md5(path: Path, chunk: int = 1 << 20) -> str:
    """md5 of the decompressed content of a gzip file; raises OSError/EOFError when it is not one."""
    h = hashlib.md5()
    with gzip.open(path, "rb") as fz:
        while block := fz.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, f: RemoteFile, form: str | None = None, downloaded: bool = False) -> str:
    """Check `path`, a copy of `f` in the form named `form` (default `f.name`); return its md5.

    Forms (see `RemoteFile.raw_md5`): `f.name` with the published md5; for a gzip file with a
    known `raw_md5`, also `f.raw_name` (decompressed) and `f.name` recompressed (its decompressed
    content has `raw_md5`). A download must match the published md5. Raises FetchError naming
    the file, its md5 and the expected ones.
    """
    form = form or f.name
    digest = md5sum(path)
    if form == f.raw_name:
        if digest != f.raw_md5:
            raise FetchError(f"checksum mismatch for {form} ({f.note}, decompressed {f.name}): md5 {digest}, expected "
                             f"{f.raw_md5} (the decompressed content; the published {f.name} has md5 {f.md5})")
        return digest
    if f.md5 is not None and digest != f.md5:
        if f.raw_md5 is None or downloaded:
            raise FetchError(f"checksum mismatch for {f.name} ({f.note}): md5 {digest}, expected {f.md5}")
        try:
            raw = _gunzip_md5(path)
        except (OSError, EOFError, zlib.error) as exc:
            raw = f"none: not a complete gzip stream ({type(exc).__name__}: {exc})"
        if raw != f.raw_md5:
            raise FetchError(f"checksum mismatch for {f.name} ({f.note}): md5 {digest}, decompressed md5 {raw}; "
                             f"expected the published md5 {f.md5} or a recompressed file whose decompressed "
                             f"content has md5 {f.raw_md5}")
    if f.check is not None:
        try:
            f.check(path)
        except (ValueError, OSError) as exc:
            raise FetchError(f"content check failed for {f.name} ({f.note}): {exc}") from None
    return digest


def _forms(f: RemoteFile) -> list[str]:
    """The names a copy of `f` may have in a mirror or the data root: the original, then the decompressed one."""
    return [f.name] + ([f.raw_name] if f.raw_name else [])


def installed(dest: Path, f: RemoteFile) -> Path:
    """The verified copy of `f` under a fetched dataset directory `dest`, in whichever form it was obtained."""
    for n in _forms(f):
        if (dest / n).is_file():
            return dest / n
    raise FetchError(f"{dest}: no {' or '.join(_forms(f))} ({f.note}); remove {dest / MARKER} and fetch again")


def _where_to_place(f: RemoteFile, source: Source, dest: Path, mirror: Path | None) -> str:
    expect = f"md5 {f.md5}" if f.md5 else "checked by content"
    mirror_hint = f"{mirror / source.name / f.name}" if mirror else f"<mirror>/{source.name}/{f.name} (and pass --mirror <mirror>)"
    raw = (f"; or the decompressed {f.raw_name} (md5 {f.raw_md5}), or a recompressed {f.name} with that content, "
           f"in the same places" if f.raw_name else "")
    return f"place {f.name} ({f.note}, {expect}; from {f.urls[0]}) at {mirror_hint} or at {dest / f.name}{raw}"


def _obtain(f: RemoteFile, source: Source, dest: Path, mirror: Path | None, new: list[Path]) -> tuple[str, str]:
    """Put a verified copy of `f` under `dest`; return (its file name there, its md5).

    Files this call creates are appended to `new` (so a later failure can remove them).
    """
    for n in _forms(f):
        target = dest / n
        if target.exists():
            # Only verified files are renamed into place, so a failing one was put there by hand:
            # report it rather than delete someone's file.
            try:
                return n, _verify(target, f, n)
            except FetchError as exc:
                raise FetchError(f"{source.name}: existing {target} fails verification ({exc}); remove or replace it") from None
    if mirror is not None:
        for d in (source.name, *source.mirror_aliases):
            for n in _forms(f):
                src = mirror / d / n
                if src.is_file():
                    return n, _install(dest / n, f, lambda tmp, src=src: shutil.copyfile(src, tmp), str(src), new, form=n)
    if is_offline():
        raise FetchError(f"{source.name}: {f.name} is not available offline "
                         f"(OPTIREP_OFFLINE/HF_HUB_OFFLINE is set): {_where_to_place(f, source, dest, mirror)}")
    errors = []
    for url in f.urls:
        try:
            return f.name, _install(dest / f.name, f, lambda tmp, url=url: _download(url, tmp), url, new,
                                    downloaded=True)
        except FetchError:
            raise
        except OSError as exc:  # URLError, HTTPError, timeouts, resets
            errors.append(f"{url}: {exc}")
    raise FetchError(f"{source.name}: could not download {f.name} ({'; '.join(errors)}); "
                     f"{_where_to_place(f, source, dest, mirror)}")


def _install(target: Path, f: RemoteFile, produce, origin: str, new: list[Path], form: str | None = None,
             downloaded: bool = False) -> str:
    """Write into a temp file beside `target`, verify, then rename into place (and record it in `new`)."""
    # not mkstemp: its 0600 mode would make a shared data root unreadable to others
    tmp = target.with_name(f".{target.name}.{owner_tag()}{uuid.uuid4().hex[:8]}.part")
    try:
        produce(tmp)
        try:
            digest = _verify(tmp, f, form, downloaded=downloaded)
        except FetchError as exc:
            raise FetchError(f"{exc} (from {origin})") from None
        os.replace(tmp, target)
        new.append(target)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, tmp: Path) -> None:
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "optirep-fetch"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1],
                  file=sys.stderr, disable=None) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    if total is not None and tmp.stat().st_size != total:
        raise OSError(f"truncated download: {tmp.stat().st_size} of {total} bytes")


def _extract(archive: Path, source: Source, dest: Path) -> None:
    """Extract `archive` into a temp dir beside it, check the members, rename into place."""
    member_dir, members = source.archive
    final = dest / member_dir
    if final.is_dir() and all((final / m).is_file() for m in members):
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{member_dir}.{owner_tag()}", suffix=".part", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            archive.unlink(missing_ok=True)  # it cannot be used; a rerun must obtain it again
            raise FetchError(f"{source.name}: {archive.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                             f"removed it, fetch again") from None
        missing = [m for m in members if not (tmp / member_dir / m).is_file()]
        if missing:
            archive.unlink(missing_ok=True)
            raise FetchError(f"{source.name}: {archive.name} lacks {[f'{member_dir}/{m}' for m in missing]}; removed it")
        if source.archive_check is not None:
            try:
                source.archive_check(tmp / member_dir)
            except (ValueError, OSError) as exc:
                archive.unlink(missing_ok=True)
                raise FetchError(f"{source.name}: {archive.name} is incomplete ({exc}); removed it, "
                                 f"fetch again") from None
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / member_dir, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{owner_tag()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- HF datasets


def hf_split_files(directory: Path, split: str) -> list[Path]:
    """The parquet shards of `split` in `directory` (`<split>-*.parquet`), sorted."""
    return sorted(directory.glob(f"{split}-*.parquet"))


def _check_parquet(files: list[Path], source: Source, split: str) -> int:
    """Rows in `files`; raises FetchError when a shard is unreadable or lacks a column."""
    import pyarrow.parquet as pq

    rows = 0
    for p in files:
        try:
            meta = pq.ParquetFile(p)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise FetchError(f"{source.name}: {p.name} is not a readable parquet file ({exc})") from None
        cols = set(meta.schema_arrow.names)
        missing = [c for c in source.columns if c not in cols]
        if missing:
            raise FetchError(f"{source.name}: {p.name} lacks columns {missing} (has {sorted(cols)})")
        rows += meta.metadata.num_rows
    if rows == 0:
        raise FetchError(f"{source.name}: split {split!r} has no rows in {[p.name for p in files]}")
    return rows


def _hf_where_to_place(source: Source, origin: Path | None) -> str:
    repo, _, folder = source.hf
    lines = [f"{origin or '<mirror>/' + source.name}/{n}" for s in source.hf_splits for n in s.files]
    return (f"place the parquet files of https://huggingface.co/datasets/{repo}/tree/main/{folder} as "
            + ", ".join(lines) + (" and pass --mirror <mirror>" if origin is None else ""))


def _fetch_hf(source: Source, dest: Path, mirror: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f".hf.{owner_tag()}", suffix=".part", dir=dest))
    try:
        origin = mirror / source.name if mirror is not None else None
        have_mirror = origin is not None and all(hf_split_files(origin, s.split) for s in source.hf_splits)
        if have_mirror:
            for s in source.hf_splits:
                for p in hf_split_files(origin, s.split):
                    shutil.copyfile(p, tmp / p.name)
        elif is_offline():
            raise FetchError(f"{source.name} is not available offline (OPTIREP_OFFLINE/HF_HUB_OFFLINE is set): "
                             + _hf_where_to_place(source, origin))
        else:
            try:
                _hf_download(source, tmp)
            except FetchError as exc:
                raise FetchError(f"{exc}; or {_hf_where_to_place(source, origin)}") from None
        record = {}
        for s in source.hf_splits:
            files = hf_split_files(tmp, s.split)
            if not files:
                raise FetchError(f"{source.name}: split {s.split!r} missing (expected {list(s.files)})")
            record[s.split] = _check_parquet(files, source, s.split)
        for p in tmp.iterdir():
            os.replace(p, dest / p.name)
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hf_download(source: Source, tmp: Path) -> None:
    try:
        import datasets
    except ImportError as exc:
        raise FetchError(f"{source.name} needs the `datasets` package (pip install 'optirep[full]'): {exc}") from None
    repo, config, _ = source.hf
    try:
        ds = datasets.load_dataset(repo, config)
    except Exception as exc:  # network, auth, hub layout changes
        raise FetchError(f"{source.name}: datasets.load_dataset({repo!r}, {config!r}) failed: {exc}") from None
    for s in source.hf_splits:
        ds[s.split].to_parquet(str(tmp / f"{s.split}-00000-of-00001.parquet"))


# ---------------------------------------------------------------------------------- CLI


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="optirep fetch", description=__doc__.split("\n")[0])
    p.add_argument("dataset", help=f"one of {sorted(SOURCES) + sorted(EMBEDDED)}")
    p.add_argument("--root", "--data-root", dest="root", default=None,
                   help="data root (default: $OPTIREP_DATA or ./data); --data-root as in optirep train")
    p.add_argument("--mirror", default=None, help="offline mirror <DIR>/<dataset>/<file> (default: $OPTIREP_DATA_MIRROR)")
    p.add_argument("--no-deps", action="store_true", help="skip the default tokenizer files the dataset needs")
    return p


def main(argv: list[str] | None = None) -> int:
    """`optirep fetch`: returns 0 on success, 1 (message on stderr) on a fetch error."""
    args = build_parser().parse_args(argv)
    if args.dataset in EMBEDDED:
        print(f"{args.dataset}: embedded ({EMBEDDED[args.dataset]}), nothing to fetch")
        return 0
    if args.dataset not in SOURCES:
        print(f"optirep fetch: unknown dataset {args.dataset!r}; known: {sorted(SOURCES) + sorted(EMBEDDED)}", file=sys.stderr)
        return 2
    try:
        dest = fetch(args.dataset, args.root, args.mirror, with_deps=not args.no_deps)
    except FetchError as exc:
        print(f"optirep fetch: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: ok ({dest})")
    return 0


class _CallableModule(types.ModuleType):
    """Lets `from optirep.data import fetch; fetch("cifar10")` work although `fetch` is this module."""

    def __call__(self, *args, **kwargs):
        return fetch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
