"""Checkpoint files in the folder the operator named: listing, path guards, the first choice, digests.

A name from a request is resolved only inside that folder: absolute paths, '..' and symlinks that
lead out of it are refused, and pickles are never opened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vaescope.training.checkpoint import (
    PICKLE_SUFFIXES,
    TRAIN_STATE_NAME,
    CheckpointError,
    read_metadata,
)

CHECKPOINT_SUFFIX = ".safetensors"
# Said instead of a bare "not a .safetensors file", so someone with a torch.save file learns why
# and what to do; the file is never opened.
PICKLE_REFUSAL = ("'{suffix}' files are Python pickles (torch.save), which can run arbitrary code when "
                  "loaded, so vaescope never opens them; use a .safetensors checkpoint from latent-train")


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location (symlinks followed) lies under the real ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def list_checkpoints(root: Path) -> list[str]:
    """Sorted relative POSIX paths of ``*.safetensors`` under ``root``.

    Files (or folders) reached through a symlink that points outside ``root`` are skipped, so the
    dropdown can only ever name files inside the folder the server was started on. So is
    latent-train's resume state (``train_state.safetensors`` beside each run's model), so that a
    folder of runs lists its models only.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob(f"*{CHECKPOINT_SUFFIX}"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # hidden files / temp files of writers
            continue
        if path.name == TRAIN_STATE_NAME:
            continue
        if path.is_file() and _inside(path, root):
            found.append(rel.as_posix())
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
    for name in names:
        try:
            rank[name] = read_metadata(Path(root) / name).showcase_rank
        except CheckpointError:
            rank[name] = 1_000
    return min(names, key=lambda n: (rank[n], n)) if names else None


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
