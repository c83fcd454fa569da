"""stepkit.atomic.replacing: the final name holds the old file or the whole new one, never a part."""

from __future__ import annotations

import pytest

from stepkit.atomic import replacing


def test_the_new_content_lands_under_the_final_name_and_no_temp_file_is_left(tmp_path):
    target = tmp_path / "deep" / "out.parquet"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing under the final name until the write is done
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.parquet"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "out.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
