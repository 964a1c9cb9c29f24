"""Run directories read and written safely: validated input, verified files, one writer, no space surprises.

What `optirep train` and the readers of run files (`analyze`, `aggregate`, `select`, `derive-hp`)
share, so that every file read back is checked and a bad one is named:

* `validate_run(run)`: the whole resolved run (hyperparameters through the optimizer's own
  checks, seed range, threads, device, data_args keys) before anything is written; a `ConfigError`
  names the field and the allowed values.
* `save_checkpoint` / `resume_checkpoint`: a checkpoint is `torch.save` bytes followed by a trailer
  `CKPT_MAGIC + sha256(payload)`; the previous checkpoint is kept as `ckpt.prev.pt`. On resume a
  checkpoint that is truncated, empty, random or has one flipped bit fails its hash, is reported on
  stderr by name and moved aside (`<name>.corrupt`), and the run resumes from the previous good one
  or from scratch. Resuming from an earlier step is exact: batches and augmentation depend on
  (seed, step) only and the RNG state travels with the checkpoint.
* `read_json`, `read_record`, `load_state_dict`, `load_npz`: a truncated or wrong file gives one
  `RunFileError` naming it; `read_record` checks a run's `metrics.json` against `RECORD_SCHEMA` and
  its task/label/seed against its path.
* `write_bytes_atomic` / `write_json_atomic`: temp file + fsync + rename; a full disk raises
  `RunFileError("no space left on <dir> ...")` and removes the temp file.
* `RunDir`: the run directory, locked (`fcntl.flock` on `<out>/.optirep.lock`) for the run's whole
  lifetime, with stale files of a killed run cleaned up and finished runs protected.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import inspect
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from optirep.config import ConfigError

CKPT_NAME, CKPT_PREV = "ckpt.pt", "ckpt.prev.pt"
CKPT_MAGIC = b"\nOPTIREP-CKPT-SHA256\n"  # followed by the 32-byte sha256 digest of the bytes before it
LOCK_NAME = ".optirep.lock"
#: Files a run directory's writer produces; one without a config.json cannot be attributed to a config.
RUN_FILES = ("metrics.json", "metrics.jsonl", "model.pt", "features.npz", CKPT_NAME, CKPT_PREV)
SEED_MAX = 2**32 - 1  # numpy's np.random.seed range
DEVICES = ("auto", "cpu", "cuda")


class RunIOError(ValueError):
    """A run file or directory cannot be used; the message names it (the CLI prints it, exit 2)."""


class RunFileError(RunIOError):
    """A file is truncated, corrupt, of the wrong shape, or could not be written (disk full)."""


class RunLockedError(RunIOError):
    """Another process holds the run directory's lock."""


# ----------------------------------------------------------------------------- writing
def _no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_bytes_atomic(path: Path, data: bytes | list[bytes], keep_previous: Path | None = None) -> None:
    """Write `data` (bytes, or chunks written in order) to `path` via `<path>.tmp` (fsynced) and a rename.

    keep_previous: rename an existing `path` to this name first (the checkpoint rotation).
    Raises RunFileError "no space left on <dir>" when the disk (or quota) is full; the temp file is removed.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if _no_space(exc):
            raise RunFileError(f"no space left on {path.parent} (writing {path.name}, {sum(map(len, chunks))} bytes); "
                               f"free space or use another --out") from None
        raise


def json_bytes(obj: Any, default=None) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n").encode()


def write_json_atomic(path: Path, obj: Any, default=None) -> None:
    write_bytes_atomic(path, json_bytes(obj, default))


def torch_bytes(obj: Any) -> bytes:
    """`torch.save(obj)` into memory (so a full disk is an OSError of our own write, not torch's)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_torch_atomic(obj: Any, path: Path) -> str:
    """torch.save `obj` to `path` atomically; returns the file's sha256 (hex)."""
    data = torch_bytes(obj)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(obj: Any, path: Path) -> None:
    """Write a checkpoint with its sha256 trailer; the existing one becomes `ckpt.prev.pt`."""
    payload = torch_bytes(obj)
    write_bytes_atomic(path, [payload, CKPT_MAGIC, hashlib.sha256(payload).digest()],  # no joined copy in memory
                       keep_previous=path.with_name(CKPT_PREV))


def load_checkpoint(path: Path, map_location=None) -> Any:
    """Read a checkpoint written by `save_checkpoint`, verifying its hash.

    Raises RunFileError naming the file when it is empty, truncated, lacks the trailer, fails the
    hash (any flipped bit) or cannot be unpickled.
    """
    import torch

    data = Path(path).read_bytes()
    n = len(CKPT_MAGIC) + 32
    if len(data) == 0:
        raise RunFileError(f"{path}: empty file (0 bytes)")
    if len(data) < n or data[-n:-32] != CKPT_MAGIC:
        raise RunFileError(f"{path}: truncated or not an optirep checkpoint ({len(data)} bytes, no integrity trailer)")
    payload, digest = data[:-n], data[-32:]
    if hashlib.sha256(payload).digest() != digest:
        raise RunFileError(f"{path}: content hash mismatch (sha256 {hashlib.sha256(payload).hexdigest()[:16]}..., "
                           f"recorded {digest.hex()[:16]}...): the file is corrupt")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError ...
        raise RunFileError(f"{path}: hash verified but unreadable ({type(exc).__name__}: {exc})") from None


def resume_checkpoint(out: Path, map_location=None, log=None) -> Any | None:
    """The newest good checkpoint of a run directory, or None (start from scratch).

    Tries `ckpt.pt`, then `ckpt.prev.pt`. A bad one is reported through `log` (default: stderr) by
    name and renamed to `<name>.corrupt`, so it is never read again and stays for inspection.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    bad = []
    for name in (CKPT_NAME, CKPT_PREV):
        path = Path(out) / name
        if not path.exists():
            continue
        try:
            ck = load_checkpoint(path, map_location)
        except RunFileError as exc:
            bad.append(name)
            os.replace(path, path.with_name(name + ".corrupt"))
            log(f"optirep train: warning: {exc}; moved it to {name}.corrupt")
            continue
        if bad:
            log(f"optirep train: warning: resuming {out} from {name} (step {ck['state']['step']}) "
                f"instead of the corrupt {', '.join(bad)}")
        return ck
    if bad:
        log(f"optirep train: warning: no good checkpoint left in {out} ({', '.join(bad)} corrupt); "
            f"restarting the run from step 0")
    return None


# ----------------------------------------------------------------------------- reading
def read_json(path: Path, what: str = "") -> Any:
    """JSON from `path`; RunFileError naming the file when it is truncated, empty or not JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not a text file ({exc.reason})") from None
    except IsADirectoryError:
        raise RunFileError(f"{path}: is a directory, expected a JSON file") from None
    if not text.strip():
        raise RunFileError(f"{path}: empty file{' (' + what + ')' if what else ''}; delete it or rerun what wrote it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: truncated or not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                           f"{'; ' + what if what else ''}") from None


def read_jsonl(path: Path) -> list:
    """One JSON value per non-empty line; RunFileError naming `path:line` for a bad (e.g. cut) line."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path}:{lineno}: truncated or not valid JSON ({exc.msg})") from None
    return rows


_NUM = {"type": ["number", "null"]}
#: What every reader of a final run's metrics.json relies on (docs/DESIGN.md "Run directory").
RECORD_SCHEMA = {
    "type": "object",
    "required": ["experiment", "task", "label", "optimizer", "seed", "hp", "metric", "higher_is_better",
                 "final_test", "final_val", "best_val", "diverged", "steps"],
    "properties": {
        "experiment": {"type": "string"}, "task": {"type": "string"}, "label": {"type": "string"},
        "optimizer": {"type": "string"}, "seed": {"type": "integer", "minimum": 0},
        "hp": {"type": "object"}, "metric": {"type": "string"}, "higher_is_better": {"type": "boolean"},
        "final_test": _NUM, "final_val": _NUM, "best_val": _NUM, "final_train_loss": _NUM,
        "best_val_step": {"type": ["integer", "null"]}, "steps": {"type": "integer", "minimum": 0},
        "diverged": {"type": "boolean"}, "diverged_step": {"type": ["integer", "null"]},
        "wall_time_s": _NUM, "time_per_step_s": _NUM, "time_per_opt_step_s": _NUM,
        "peak_memory_bytes": _NUM, "optimizer_state_bytes": _NUM,
        "diagnostics": {"type": "object"}, "extra": {"type": "object"}, "config_hash": {"type": "string"},
    },
}
#: A tuning trial's metrics.json as `select` and `aggregate` read it.
TRIAL_SCHEMA = {
    "type": "object",
    "required": ["hp", "final_val", "diverged"],
    "properties": {"hp": {"type": "object"}, "final_val": _NUM, "best_val": _NUM, "diverged": {"type": "boolean"},
                   "higher_is_better": {"type": "boolean"}, "wall_time_s": _NUM},
}


def check_schema(obj: Any, schema: dict, path: Path) -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "<top level>"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RunFileError(f"{path}: invalid run record: {where}: {e.message}{more}")


def read_record(path: Path, expect: dict | None = None, schema: dict = RECORD_SCHEMA) -> dict:
    """A run's metrics.json, schema-checked; `expect` (e.g. task/label/seed from its path) must match."""
    rec = read_json(path)
    check_schema(rec, schema, path)
    for key, want in (expect or {}).items():
        if key in rec and rec[key] != want:
            raise RunFileError(f"{path}: {key} is {rec[key]!r} but its path says {want!r} "
                               f"(a record copied from another run?)")
    return rec


def load_state_dict(path: Path, sha256: str | None = None) -> dict:
    """A `model.pt` state_dict; RunFileError naming it when truncated, corrupt or not a state_dict."""
    import torch

    path = Path(path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise RunFileError(f"{path}: content hash differs from the one metrics.json recorded: the file is corrupt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip errors, EOFError, UnpicklingError ...
        raise RunFileError(f"{path}: truncated or corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, dict):
        raise RunFileError(f"{path}: must hold a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def load_npz(path: Path, keys: tuple[str, ...] = (), sha256: str | None = None) -> dict:
    """Arrays of an .npz (all read now); RunFileError naming it when truncated or lacking `keys`."""
    import zipfile

    import numpy as np

    path = Path(path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise RunFileError(f"{path}: content hash differs from the one metrics.json recorded: the file is corrupt")
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise RunFileError(f"{path}: truncated or corrupt ({type(exc).__name__}: {exc})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise RunFileError(f"{path}: lacks arrays {missing} (has {sorted(arrays)})")
    return arrays


# ----------------------------------------------------------------------------- validation
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_value(where: str, value: Any, default: Any, strict: bool = False) -> None:
    """`value` must have the type of `default` (bool, number, tuple of numbers); other defaults check nothing.

    strict: an int default also requires a whole number, a str default a string (for tables written
    for this check, not for signatures, whose `momentum: float = 0` or `compile: bool | str = "auto"` mislead).
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not allowed (allowed values: true, false)")
    elif _is_number(default):
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not allowed (allowed: a finite number)")
        if strict and isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{where}: {value!r} is not allowed (allowed: a whole number)")
    elif isinstance(default, tuple) and default and all(_is_number(d) for d in default):
        if (not isinstance(value, (list, tuple)) or len(value) != len(default)
                or not all(_is_number(v) and math.isfinite(v) for v in value)):
            raise ConfigError(f"{where}: {value!r} is not allowed (allowed: a list of {len(default)} "
                              f"finite numbers, e.g. {list(default)})")
    elif strict and isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is not allowed (allowed: a string, e.g. {default!r})")


#: Types of the data_args (docs/DESIGN.md "Data API"); the loaders check their ranges.
DATA_ARG_TYPES = {"train_fraction": 1.0, "val_size": 1.0, "per_class": 1, "split_seed": 0, "subset_seed": 0,
                  "size": 1, "max_len": 1, "augment": True, "seed_mask_bug": True, "normalize": "v6", "tokenizer": "gpt2"}


def check_hp(name: str, hp: dict) -> None:
    """Each hp of registry optimizer `name` against the type of its default in the optimizer's
    signature, plus the common ranges (lr > 0, betas in [0, 1), weight_decay/momentum >= 0, eps > 0).

    Raises ConfigError "optimizer.hp.<key>: <value> is not allowed (allowed: ...)". Unknown names are
    config.check_semantics's business and are skipped here.
    """
    from optirep import optim

    params = inspect.signature(optim.spec(name).cls.__init__).parameters
    hp = {k: v for k, v in hp.items() if k in params}
    for key, value in hp.items():
        default = params[key].default
        _check_value(f"optimizer.hp.{key}", value, 0.0 if key == "lr" else default)
        # torch's code-path switches default to None ("torch picks"); a string would be read as truthy
        if key in ("foreach", "fused") and value is not None and not isinstance(value, bool):
            raise ConfigError(f"optimizer.hp.{key}: {value!r} is not allowed (allowed values: true, false, null)")
    lr = hp.get("lr", params["lr"].default if "lr" in params else None)
    if _is_number(lr) and not lr > 0:
        raise ConfigError(f"optimizer.hp.lr: {lr!r} is not allowed (allowed: a finite number > 0)")
    betas = hp.get("betas")
    if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optimizer.hp.betas: {list(betas)!r} is not allowed (allowed: each in [0, 1))")
    for key, low, rule in (("weight_decay", 0.0, ">= 0"), ("momentum", 0.0, ">= 0"), ("eps", 0.0, "> 0")):
        v = hp.get(key)
        if _is_number(v) and (v < low or (rule == "> 0" and v == low)):
            raise ConfigError(f"optimizer.hp.{key}: {v!r} is not allowed (allowed: a finite number {rule})")


def validate_run(run: dict) -> None:
    """Check a resolved run (config.resolve_run) completely; raises ConfigError naming the field.

    Writes nothing. The optimizer is built on one dummy parameter, so its own argument checks run.
    """
    import torch

    from optirep import models, optim
    from optirep.data import loaders

    seed = run.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed: {seed!r} is not allowed (allowed: an integer 0..{SEED_MAX})")
    threads = run.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"run.threads: {threads!r} is not allowed (allowed: an integer >= 1, or unset)")
    if run.get("device") not in DEVICES:
        raise ConfigError(f"run.device: {run.get('device')!r} is not allowed (allowed values: {', '.join(DEVICES)})")
    if run["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but torch.cuda.is_available() is False (allowed here: auto, cpu)")
    task = run["task"]
    allowed = loaders._ALLOWED.get(task["dataset"])
    unknown = sorted(set(task.get("data_args") or {}) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ConfigError(f"task.data_args: unknown key(s) {unknown} for dataset {task['dataset']!r} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    for key, value in (task.get("data_args") or {}).items():
        if key in DATA_ARG_TYPES:
            _check_value(f"task.data_args.{key}", value, DATA_ARG_TYPES[key], strict=True)
    model_params = inspect.signature(models.builder(task["model"])).parameters
    for key, value in (task.get("model_args") or {}).items():
        if key in model_params:  # unknown keys: build_model names them with the accepted ones
            _check_value(f"task.model_args.{key}", value, model_params[key].default)
    o = run["optimizer"]
    if not isinstance(o.get("closure", False), bool):
        raise ConfigError(f"optimizer.closure: {o['closure']!r} is not allowed (allowed values: true, false)")
    check_hp(o["name"], o["hp"])
    try:
        optim.build(o["name"], [torch.nn.Parameter(torch.zeros(2))], **o["hp"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer.hp ({o['name']}): {exc}") from None


def validate_stop_after(n: int | None) -> None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"--stop-after: {n!r} is not allowed (allowed: a number of steps >= 1)")


# ----------------------------------------------------------------------------- the run directory
class RunDir:
    """`with RunDir(out, run) as rd:` the run directory, locked for the block; see the module docstring.

    On entry (lock held): temp files of a killed writer are removed; a finished run (metrics.json
    of this config) drops a stale checkpoint and is returned as `rd.finished`; a directory holding
    another config's files, or run files without a config.json, is refused (nothing is overwritten).
    `rd.write_config()` writes config.json once the run is known to be valid. If the block raises
    before config.json was written, a directory this call created is removed again.
    """

    def __init__(self, out: Path, run: dict, quiet: bool = False):
        self.out, self.run, self.quiet = Path(out), run, quiet
        self.finished: dict | None = None
        self._fd: int | None = None
        self._created = False
        self._config_written = False

    # -- lock
    def _lock(self) -> None:
        self._created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if _no_space(exc):
                raise RunFileError(f"no space left on {self.out}") from None
            raise
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise RunLockedError(f"{self.out} is being written by another optirep train ({holder}); "
                                 f"wait for it to end or stop it, then rerun") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # -- state of the directory
    def _inspect(self) -> None:
        out, run = self.out, self.run
        for tmp in out.glob("*.tmp"):  # a killed writer's temp files (we hold the lock: nobody else writes)
            tmp.unlink(missing_ok=True)
        for tmp in out.glob("*.tmp.npz"):
            tmp.unlink(missing_ok=True)
        cfg_file, final_file = out / "config.json", out / "metrics.json"
        if cfg_file.exists():
            _, got = self._recorded(cfg_file, "the run's resolved config")
            if got != run["config_hash"]:
                raise ConfigError(f"{out} holds a run with a different config (config_hash {got} "
                                  f"!= {run['config_hash']}); use another --out or delete it")
            self._config_written = True
        if final_file.exists():
            rec, got = self._recorded(final_file, "the finished run's record")
            # a record without config_hash (older versions) is attributed by its config.json alone
            if got != run["config_hash"] and (got is not None or not cfg_file.exists()):
                raise ConfigError(f"{out} holds a finished run of another config (metrics.json config_hash {got} "
                                  f"!= {run['config_hash']}); it is not retrained over: use another --out or delete it")
            if not cfg_file.exists():  # the finished run's config.json was deleted: it is this run, restore it
                self.write_config()
            for stale in (CKPT_NAME, CKPT_PREV):  # killed between metrics.json and the checkpoint's removal
                (out / stale).unlink(missing_ok=True)
            self.finished = rec
            return
        if not cfg_file.exists():
            present = [f for f in RUN_FILES if (out / f).exists()]
            if present:
                raise ConfigError(f"{out} holds run files ({', '.join(present)}) but no config.json, so they cannot "
                                  f"be attributed to this config; they are not overwritten: use another --out or "
                                  f"delete them")

    @staticmethod
    def _recorded(path: Path, what: str) -> tuple[dict, str | None]:
        obj = read_json(path, what)
        if not isinstance(obj, dict):
            raise RunFileError(f"{path}: expected a JSON object ({what}), got {type(obj).__name__}")
        return obj, obj.get("config_hash")

    def write_config(self) -> None:
        if not self._config_written:
            from optirep.train import _json_default

            write_json_atomic(self.out / "config.json", self.run, default=_json_default)
            self._config_written = True

    def __enter__(self) -> RunDir:
        self._lock()
        try:
            self._inspect()
        except BaseException:
            self._cleanup_failed()
            raise
        return self

    def _cleanup_failed(self) -> None:
        """Bad input or an early failure: leave no directory this call created (nothing to mistake for a run)."""
        if self._created and not self._config_written:
            for p in self.out.iterdir():
                if p.name != LOCK_NAME:
                    break
            else:
                (self.out / LOCK_NAME).unlink(missing_ok=True)
                self._unlock()
                try:
                    self.out.rmdir()
                except OSError:
                    pass
        self._unlock()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._cleanup_failed()
        else:
            self._unlock()
