"""hass.files: a destination holds the old file or the complete new one, and no temporary is left behind."""

import pytest

from hass.files import atomic_path, atomic_write_text


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    assert atomic_write_text(path, "first\n") == path
    assert path.read_text() == "first\n"
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".png" and tmp.name.startswith(".")
            tmp.write_bytes(b"half")
            raise RuntimeError("killed while writing")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_a_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x.md"):
            pass
    assert list(tmp_path.iterdir()) == []
