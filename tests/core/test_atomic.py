"""Atomic writes: all or nothing, and the file keeps the permissions an ordinary save would give it."""

import os
import stat
import sys

import pytest

from lora_studio.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text, is_temp_name, sweep, temp_dir_for


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


def test_the_temp_names_of_atomic_writes_are_recognised_and_nothing_else(tmp_path):
    seen = []
    atomic_write(tmp_path / "tstyle.safetensors", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(".tstyle.safetensors.") and is_temp_name(seen[0])
    assert is_temp_name(temp_dir_for(tmp_path / "checkpoints" / "step_000005").name)  # .step_000005.tmp
    for name in (".config.toml.ab_c1234.tmp", ".step_000006_p0_s1234.png.k2j3h4g5.tmp", ".step_000005.tmp"):
        assert is_temp_name(name), name
    for name in ("config.toml", "x.tmp", ".tmp", ".DS_Store", ".hidden", "step_000005", "notes.tmp.txt", "._img.png"):
        assert not is_temp_name(name), name


def test_sweep_removes_leftover_temp_files_and_folders_only(tmp_path):
    (tmp_path / ".step_000005.tmp").mkdir()
    (tmp_path / ".step_000005.tmp" / "lora.safetensors").write_bytes(b"half")
    (tmp_path / ".config.toml.ab_c1234.tmp").write_text("half")
    kept = [tmp_path / "config.toml", tmp_path / "x.tmp", tmp_path / ".hidden", tmp_path / "sub" / ".a.b1234567.tmp"]
    for p in kept:
        p.parent.mkdir(exist_ok=True)
        p.write_text("keep")
    removed = sweep(tmp_path)
    assert sorted(p.name for p in removed) == [".config.toml.ab_c1234.tmp", ".step_000005.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "config.toml", "sub", "x.tmp"]
    assert all(p.read_text() == "keep" for p in kept)  # one folder only: sub/ is not swept
    assert sweep(tmp_path / "missing") == []
