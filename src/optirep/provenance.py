"""Which code produced a result: the git commit of a checkout, or the commit pip recorded at install.

    from optirep.provenance import git_sha
    git_sha()      # '3f2c...'; '3f2c...-dirty' with uncommitted changes; 'unknown' if neither source has one

A source checkout (`src/optirep` beside a `pyproject.toml`, as in the repository and an editable
install) answers with `git rev-parse HEAD`, marked `-dirty` when tracked files differ from it, except the
pipeline's own outputs (`OUTPUT_PATHS`: results/, the paper, the README, dvc.lock), which the workflow rewrites
while it runs (Snakemake deletes an output before its job starts) and which no run reads as code. An
installed copy (`pip install git+https://...@<ref>`) has no `.git`: pip writes the commit it built
into the distribution's `direct_url.json` (PEP 610, `vcs_info.commit_id`), and that is used. Git is
never asked about an installed copy: the directory around a site-packages may be some other
repository (a virtualenv inside a checkout).
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: tracked paths the pipeline writes; changes there do not make the code "-dirty"
OUTPUT_PATHS = ("results", "paper", "README.md", "dvc.lock")


def source_checkout(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The repository root when `package_dir` is `<root>/src/optirep` with `<root>/pyproject.toml`, else None."""
    root = package_dir.parents[1]
    if package_dir.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def checkout_commit(root: Path) -> str | None:
    """`git rev-parse HEAD` of `root` (+ '-dirty' when tracked files outside `OUTPUT_PATHS` changed); None without git, or when
    `root` is not the top of its own repository (a copy of the tree inside some other repository)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        lines = sha.stdout.split()
        if sha.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in OUTPUT_PATHS)], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("-dirty" if dirty.stdout.strip() else "")


def install_commit(dist_name: str = "optirep", path: list[str] | None = None) -> str | None:
    """The commit PEP 610's `direct_url.json` records for the installed distribution, or None.

    `path`: where to look for the distribution (default sys.path, as importlib.metadata does).
    None for an install from a plain directory or an index (no `vcs_info`).
    """
    try:
        dist = next(iter(metadata.distributions(name=dist_name, path=path) if path is not None
                         else [metadata.distribution(dist_name)]))
        text = dist.read_text("direct_url.json")
    except (metadata.PackageNotFoundError, StopIteration, OSError):
        return None
    if not text:
        return None
    try:
        commit = json.loads(text).get("vcs_info", {}).get("commit_id")
    except (ValueError, AttributeError):
        return None
    return str(commit) if commit else None


def git_sha(package_dir: Path = PACKAGE_DIR, path: list[str] | None = None) -> str:
    """The commit of the running code: the checkout's, else the install record's, else 'unknown'.

    `package_dir`: the optirep package directory (this one); `path`: where its install record is looked
    up (default sys.path).
    """
    root = source_checkout(package_dir)
    if root is not None:
        return checkout_commit(root) or "unknown"
    return install_commit(path=path) or "unknown"
