"""Atomic writes: all or nothing, and the file keeps the permissions an ordinary save would give it."""

import os
import stat
import sys

import pytest

from lora_studio.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_usual_permissions_not_private_ones(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "img.txt"
    atomic_write_text(target, "a caption")
    assert target.read_text() == "a caption"
    assert mode(target) == 0o666 & ~umask


def test_an_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "img.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "img.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["img.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE behaves this way on Linux")
def test_a_write_that_runs_out_of_room_names_the_target_and_keeps_the_old_file(tmp_path):
    import errno
    import resource

    target = tmp_path / "my_style.safetensors"
    target.write_bytes(b"the old file")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # a disk with 1000 bytes to spare, for real
    try:
        with pytest.raises(OSError) as raised:
            atomic_write_bytes(target, b"x" * 5000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(target)  # not the temp file's name
    assert target.read_bytes() == b"the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["my_style.safetensors"]
