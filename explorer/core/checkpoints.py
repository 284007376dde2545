"""Checkpoint files in the folder the operator named: listing, path guards, the first choice, digests.

A name from a request is resolved only inside that folder: absolute paths, '..' and symlinks that
lead out of it are refused, and pickles are never opened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vaescope.training.checkpoint import (
    PICKLE_SUFFIXES,
    TRAIN_STATE_NAME,
    CheckpointError,
    read_metadata,
)

CHECKPOINT_SUFFIX = ".safetensors"
MAX_LISTED = 10_000  # checkpoints listed from one folder (a folder of millions of files stays usable)
MAX_DEPTH = 8  # folders the listing descends
MAX_RANKED = 200  # headers read to choose the first model (each read is small and bounded)
# Said instead of a bare "not a .safetensors file", so someone with a torch.save file learns why
# and what to do; the file is never opened.
PICKLE_REFUSAL = ("'{suffix}' files are Python pickles (torch.save), which can run arbitrary code when "
                  "loaded, so vaescope never opens them; use a .safetensors checkpoint from latent-train")


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location (symlinks followed) lies under the real ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def list_checkpoints(root: Path) -> list[str]:
    """Sorted relative POSIX paths of ``*.safetensors`` under ``root`` (at most MAX_LISTED, at most
    MAX_DEPTH folders down).

    Files reached through a symlink that points outside ``root`` are skipped, and symlinked folders
    are not entered, so the dropdown can only ever name files inside the folder the server was
    started on. Hidden files (a writer's temp files) and latent-train's resume state
    (``train_state.safetensors`` beside each run's model) are skipped too, and unreadable folders
    are passed over: no file or folder in it can stop the listing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found: list[str] = []
    real_root = root.resolve()
    for folder, dirs, files in os.walk(root, onerror=lambda err: None, followlinks=False):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if len(rel_folder.parts) < MAX_DEPTH else []
        for name in sorted(files):
            if name.startswith(".") or name == TRAIN_STATE_NAME or not name.endswith(CHECKPOINT_SUFFIX):
                continue
            path = Path(folder) / name
            try:
                inside = path.is_file() and path.resolve().is_relative_to(real_root)
            except (OSError, RuntimeError):  # a symlink loop, a vanished file
                inside = False
            if inside:
                found.append((rel_folder / name).as_posix())
            if len(found) >= MAX_LISTED:
                return sorted(found)
    return sorted(found)


def resolve_checkpoint(root: Path, name: str) -> Path:
    """The path of checkpoint ``name`` (relative to ``root``); refuses anything outside ``root``.

    Raises CheckpointError for empty names, absolute paths, '..' components, symlinks leading out
    of ``root``, pickle files (never opened), other non-checkpoint suffixes and missing files.
    """
    root = Path(root).expanduser()
    if not name or not str(name).strip():
        raise CheckpointError(name or "<empty>", "no checkpoint name given")
    rel = Path(name)
    if rel.is_absolute() or rel.drive:
        raise CheckpointError(name, "absolute paths are refused; name a file inside the checkpoint folder")
    if ".." in rel.parts:
        raise CheckpointError(name, "'..' is refused; name a file inside the checkpoint folder")
    path = root / rel
    if not _inside(path, root):
        raise CheckpointError(name, "the path leads outside the checkpoint folder (symlink?); refused")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(name, PICKLE_REFUSAL.format(suffix=path.suffix))
    if path.suffix.lower() != CHECKPOINT_SUFFIX:
        raise CheckpointError(name, f"not a {CHECKPOINT_SUFFIX} file")
    if not path.is_file():
        raise CheckpointError(name, "file not found in the checkpoint folder")
    return path


def choose_default(root: Path, names: list[str]) -> str | None:
    """The checkpoint to open first: the one a first-time visitor learns most from (each family
    ranks itself, ``showcase_rank``: a VAE first), then by name; unreadable ones last.

    Reads only the JSON headers, so it is cheap even for a folder of large checkpoints.
    """
    rank = {}
    for name in names[:MAX_RANKED]:
        try:
            rank[name] = read_metadata(Path(root) / name).showcase_rank
        except Exception:  # noqa: BLE001 - any file, however broken, only ranks last
            rank[name] = 1_000
    for name in names[MAX_RANKED:]:  # a huge folder: the first files by name are ranked, the rest follow
        rank[name] = 1_001
    return min(names, key=lambda n: (rank[n], n)) if names else None


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
