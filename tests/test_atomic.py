"""Write-then-rename: the old content or the new one, never half; failures leave nothing behind."""
from __future__ import annotations

import pytest

from magnet.atomic import atomic_dir, atomic_file


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "sub" / "out.json"
    with atomic_file(path) as tmp:
        tmp.write_text("one")
        assert not path.exists()  # nothing visible before the block ends
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "one" and [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_a_folder_replaces_the_old_one_and_a_failed_fill_leaves_it(tmp_path):
    target = tmp_path / "adapter"
    for content in ("old", "new"):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text(content)
    assert (target / "weights").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_cache_folder_written_meanwhile_by_another_process_is_kept(tmp_path):
    target = tmp_path / "merged"
    with atomic_dir(target, marker="done.json") as tmp:
        (tmp / "done.json").write_text("mine")
        target.mkdir()  # another writer renamed its complete copy first
        (target / "done.json").write_text("theirs")
    assert (target / "done.json").read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["merged"]
