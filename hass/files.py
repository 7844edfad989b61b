"""Writing a file so that a reader sees either the old file or the complete new one, never half of it.

``atomic_path`` hands out a hidden temporary sibling of the destination (same folder, so the final rename
is atomic; same suffix, so tools that choose a format by the name, like matplotlib's ``savefig``, still
do); when the block ends it renames the temporary onto the destination, and when the block raises it
deletes the temporary and leaves the destination as it was.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "normal_permissions", "save_figure"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(path: str | os.PathLike) -> Path:
    """Give ``path`` (and, for a folder, everything in it) the modes a plain ``open`` / ``mkdir`` would:
    0o666 / 0o777 less the umask. ``tempfile.mkdtemp`` and safetensors create private (0o700 / 0o600) ones,
    which would hide a shared draft or cache from everyone but its writer."""
    path = Path(path)
    mask = _umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to fill; on success it replaces ``path``, on error it is removed.

    The parent folder is created if missing. Example::

        with atomic_path("out/plot.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        normal_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to ``path`` atomically, then close it (also when saving fails)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
    return Path(path)
