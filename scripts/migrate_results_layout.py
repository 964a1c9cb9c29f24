"""Move run directories of a results tree written before the `<spec>` level into it (docs/DESIGN.md "Results tree").

    python scripts/migrate_results_layout.py experiments/cpu_vision.yaml [--results results/cpu_vision] [--dry-run]

For every (task, label) of the experiment: `runs/<task>/<label>/seed<s>` -> `runs/<task>/<label>/<spec>/seed<s>`
and `derived/<task>/<label>/hp.json` -> `derived/<task>/<label>/<spec>/hp.json`, where `<spec>` is the
current config's (`optirep.config.spec_hash`). A run directory moves only when its config.json is the
run the current experiment file resolves to (same `config_hash`, with the hp it recorded); anything
else stays where it is and is listed. Renames keep mtimes, so Snakemake sees the moved runs as up to date.
The tuning tree (`tune/`) has no `<spec>` level yet and is left as it is.
Nothing is deleted or overwritten: a target that already exists is left alone and reported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from optirep import config, runio


def _matches(cfg: dict, task: str, label: str, run_dir: Path) -> str | None:
    """None when run_dir holds the current config's run of (task, label); else why not."""
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        return "no config.json"
    old = runio.read_json(cfg_file)
    try:
        now = config.resolve_run(cfg, task, label, old.get("seed"), hp_override=old["optimizer"]["hp"])
    except (config.ConfigError, KeyError, TypeError) as exc:
        return f"does not resolve under the current experiment ({exc})"
    if now["config_hash"] != old.get("config_hash"):
        return f"another config (config_hash {old.get('config_hash')}, current {now['config_hash']})"
    return None


def migrate(exp_file: Path, results: Path, dry_run: bool = False) -> tuple[list[str], list[str]]:
    cfg = config.load_experiment(exp_file)
    moved, kept = [], []

    def move(src: Path, dst: Path) -> None:
        if dst.exists():
            kept.append(f"{src}: {dst} already exists")
            return
        moved.append(f"{src} -> {dst}")
        if not dry_run:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)

    for task, t in cfg["tasks"].items():
        for label in t["optimizers"]:
            spec = config.spec_hash(cfg, task, label)
            for kind, prefix in (("runs", "seed"),):
                base = results / kind / task / label
                if not base.is_dir():
                    continue
                dirs = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix))
                ok = []
                for d in dirs:
                    why = _matches(cfg, task, label, d)
                    if why:
                        kept.append(f"{d}: {why}")
                    else:
                        ok.append(d)
                for d in ok:
                    move(d, base / spec / d.name)
            hp = results / "derived" / task / label / "hp.json"
            if hp.is_file():
                source = (cfg["optimizers"][label].get("lr_from") or {}).get("label")
                src_runs = results / "runs" / task / source / config.spec_hash(cfg, task, source) if source else None
                if src_runs is not None and (src_runs.is_dir() or dry_run):
                    move(hp, hp.parent / spec / "hp.json")
                else:
                    kept.append(f"{hp}: its source runs were not migrated")
    return moved, kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--results", type=Path, help="default: results/<experiment name>")
    p.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    a = p.parse_args(argv)
    results = a.results or Path("results") / config.load_experiment(a.experiment)["name"]
    moved, kept = migrate(a.experiment, results, a.dry_run)
    for line in moved:
        print(("would move " if a.dry_run else "moved ") + line)
    for line in kept:
        print(f"kept {line}", file=sys.stderr)
    print(f"{results}: {len(moved)} moved, {len(kept)} kept in place")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
