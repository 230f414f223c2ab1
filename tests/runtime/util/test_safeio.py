"""safeio: regular files only, never blocking, no links followed inside a results folder."""

from __future__ import annotations

import json
import os

import pytest

from tseg.runtime.util.safeio import (
    UnsafeFileError, check_regular, ensure_folder, is_regular, open_fd, read_bytes, read_json)


@pytest.fixture
def tree(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "v.json").write_text('{"outside": 1}')
    (out / "a" / "ok.json").write_text('{"ok": 1}')
    (out / "a" / "link.json").symlink_to(outside / "v.json")
    (out / "linkdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(out / "a" / "fifo.json")
    return out, outside


def test_regular_files_are_read_and_nothing_else_blocks_or_is_followed(tree):
    out, outside = tree
    assert read_json(out / "a" / "ok.json", below=out) == {"ok": 1}
    assert read_json(out / "a" / "link.json") == {"outside": 1}  # following links is the caller's choice
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        read_json(out / "a" / "link.json", below=out)
    with pytest.raises(UnsafeFileError, match="linkdir: is a symbolic link"):
        read_json(out / "linkdir" / "v.json", below=out)
    for follow in (True, False):  # a FIFO is refused at once, with or without below
        with pytest.raises(UnsafeFileError, match="FIFO"):
            read_bytes(out / "a" / "fifo.json", follow=follow)
    with pytest.raises(UnsafeFileError, match="folder"):
        check_regular(out / "a")
    assert not is_regular(out / "a" / "fifo.json") and is_regular(out / "a" / "ok.json")
    with pytest.raises(FileNotFoundError, match=str(out / "a" / "missing.json")):
        read_bytes(out / "a" / "missing.json", below=out)
    with pytest.raises(ValueError):
        read_bytes(outside / "v.json", below=out)


def test_created_files_never_follow_a_planted_link(tree):
    out, outside = tree
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        open_fd(out / "a" / "link.json", os.O_RDWR | os.O_CREAT, below=out)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        open_fd(out / "a" / "link.json", os.O_RDWR | os.O_CREAT, follow=False)
    assert (outside / "v.json").read_text() == '{"outside": 1}'
    os.close(open_fd(out / "a" / "new.lock", os.O_RDWR | os.O_CREAT, follow=False))
    assert (out / "a" / "new.lock").is_file()


def test_size_limit(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * 100))
    with pytest.raises(UnsafeFileError, match="more than 50 bytes"):
        read_bytes(big, limit=50)
    assert len(read_bytes(big, limit=None)) == 102


def test_ensure_folder_replaces_a_planted_link_and_keeps_its_target(tree, caplog):
    out, outside = tree
    made = ensure_folder(out / "linkdir" / "thumbs", out)
    assert made.is_dir() and not (out / "linkdir").is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["v.json"]
    assert "was a symbolic link" in caplog.text
    os.mkfifo(out / "pipe")
    ensure_folder(out / "pipe", out)
    assert (out / "pipe").is_dir()
