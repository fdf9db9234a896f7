"""Damaged checkpoints are never believed: resume and export verify a checkpoint (its manifest, else by
loading it) and fall back to the newest intact one, saying which one was damaged and what it cost.

Every case damages the newest checkpoint of a real tiny run (stopped at step 6 of 8, checkpoints at 2, 4
and 6) the way a disk, a sync tool or a hand edit does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from safetensors.torch import load_file

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError, UserError
from lora_studio.engine.export.export import export_run
from lora_studio.engine.training import checkpoint
from lora_studio.engine.training.loop import ScriptedCommands, train

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
TRAIN = {"max_steps": 8, "checkpoint_every": 2, "keep_checkpoints": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=4)


@pytest.fixture(scope="module")
def stopped_run(tiny_model_dir, dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "stopped"
    finished = train(tiny_config(tiny_model_dir, dataset, run_dir, train=TRAIN), ev.ListSink(), ScriptedCommands({6: ["stop"]}))
    assert finished.status == "stopped" and finished.step == 6
    assert [s for s, _ in checkpoint.list_checkpoints(run_dir)] == [2, 4, 6]
    return run_dir


@pytest.fixture(scope="module")
def straight_lora(tiny_model_dir, dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    train(tiny_config(tiny_model_dir, dataset, run_dir, train=TRAIN), ev.ListSink())
    return load_file(checkpoint.list_checkpoints(run_dir)[-1][1] / "lora.safetensors")


@pytest.fixture
def run_copy(stopped_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    # The run's own config.toml names its folder: the copy's must name the copy.
    cfg = config_mod.load(copy / "config.toml", check=False)
    config_mod.save(cfg.replace(output={"dir": str(copy)}), copy / "config.toml")
    return copy


def newest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_000006"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_tensor_bytes(path: Path) -> None:
    """Overwrite the middle of the tensor data with 0xFF (a float32 NaN), keeping the size."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    middle = (header + len(data)) // 2
    data[middle - 64: middle + 64] = b"\xff" * 128
    path.write_bytes(bytes(data))


def edit_state(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


DAMAGES = {
    "lora truncated": lambda d: truncate(d / "lora.safetensors"),
    "lora empty": lambda d: (d / "lora.safetensors").write_bytes(b""),
    "lora garbage": lambda d: (d / "lora.safetensors").write_bytes(os.urandom((d / "lora.safetensors").stat().st_size)),
    "lora garbled tensor bytes": lambda d: garble_tensor_bytes(d / "lora.safetensors"),
    "optimizer truncated": lambda d: truncate(d / "optimizer.pt"),
    "state truncated": lambda d: truncate(d / "state.json"),
    "state without step": lambda d: edit_state(d / "state.json", lambda s: {k: v for k, v in s.items() if k != "step"}),
    "state is an array": lambda d: (d / "state.json").write_text("[6, 8]"),
    "state claims step 99999": lambda d: edit_state(d / "state.json", lambda s: {**s, "step": 99999}),
}


def resume(cfg) -> tuple[ev.Finished, ev.ListSink]:
    sink = ev.ListSink()
    return train(cfg, sink, resume=True), sink


def test_each_checkpoint_has_a_manifest_of_every_file(stopped_run):
    for step, folder in checkpoint.list_checkpoints(stopped_run):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["step"] == step
        files = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != "manifest.json"}
        assert set(files) == {"lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"}
        assert {name: entry["size"] for name, entry in manifest["files"].items()} == files
        assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_falls_back_past_a_damaged_newest_checkpoint(damage, tiny_model_dir, dataset, run_copy):
    DAMAGES[damage](newest(run_copy))
    finished, sink = resume(tiny_config(tiny_model_dir, dataset, run_copy, train=TRAIN))
    assert finished.status == "completed" and finished.step == 8
    assert sink.of_type(ev.Started)[0].start_step == 4
    (warning,) = [w for w in sink.of_type(ev.Warning) if w.code == "damaged_checkpoint"]
    assert "step 6 (checkpoints/step_000006) is damaged" in warning.message
    assert "continues from step 4" in warning.message and "2 steps of training are lost" in warning.message
    assert warning.path == str(newest(run_copy))
    assert not sink.of_type(ev.Error)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_checkpoint_without_a_manifest_is_verified_by_loading_it(damage, run_copy):
    # Written before manifests existed: what loading can tell is still caught.
    for _, folder in checkpoint.list_checkpoints(run_copy):
        (folder / "manifest.json").unlink()
    DAMAGES[damage](newest(run_copy))  # garbled bytes: 0xFF reads as NaN, which loading catches
    with pytest.raises(checkpoint.DamagedCheckpoint):
        checkpoint.load(newest(run_copy))
    intact = checkpoint.newest_intact(run_copy)
    assert intact.step == 4 and [d.step for d in intact.damaged] == [6]


def test_an_old_checkpoint_without_a_manifest_still_resumes(tiny_model_dir, dataset, run_copy, straight_lora):
    for _, folder in checkpoint.list_checkpoints(run_copy):
        (folder / "manifest.json").unlink()
    finished, sink = resume(tiny_config(tiny_model_dir, dataset, run_copy, train=TRAIN))
    assert sink.of_type(ev.Started)[0].start_step == 6 and finished.step == 8
    assert not sink.of_type(ev.Warning)


def test_the_fallback_resume_ends_bit_identical_to_a_straight_run(tiny_model_dir, dataset, run_copy, straight_lora):
    DAMAGES["lora garbled tensor bytes"](newest(run_copy))
    resume(tiny_config(tiny_model_dir, dataset, run_copy, train=TRAIN))
    resumed = load_file(checkpoint.list_checkpoints(run_copy)[-1][1] / "lora.safetensors")
    assert resumed.keys() == straight_lora.keys()
    assert all(torch.equal(resumed[k], straight_lora[k]) for k in resumed)


def test_no_intact_checkpoint_says_start_again(tiny_model_dir, dataset, run_copy):
    for _, folder in checkpoint.list_checkpoints(run_copy):
        truncate(folder / "lora.safetensors")
    with pytest.raises(checkpoint.NoIntactCheckpoint) as e:
        resume(tiny_config(tiny_model_dir, dataset, run_copy, train=TRAIN))
    assert e.value.message.startswith("The run has no intact checkpoint (step 6: its LoRA file")
    assert e.value.message.endswith(": start again.") and e.value.message.count(". ") == 0


def test_after_a_resume_a_nan_loss_names_the_checkpoint_it_resumed_from(run_copy, tiny_model_dir, dataset, tmp_path):
    from safetensors.torch import save_file

    from lora_studio.engine.training.loop import NaNLoss

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights_file = next((broken / "unet").glob("*.safetensors"))
    weights = load_file(weights_file)
    key = next(k for k in weights if k.endswith("attn2.to_out.0.bias"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, weights_file)
    with pytest.raises(NaNLoss) as e:
        resume(tiny_config(broken, dataset, run_copy, train=TRAIN))
    assert "the last good checkpoint (step 6) is kept" in e.value.message


# --- export --------------------------------------------------------------------------------------

def test_export_of_the_newest_falls_back_with_a_warning(run_copy):
    truncate(newest(run_copy) / "lora.safetensors")
    result = export_run(run_copy)
    assert result.step == 4 and result.verified
    (warning,) = result.warnings
    assert "step 6 (checkpoints/step_000006) is damaged" in warning and "the export is of step 4" in warning


def test_export_of_a_damaged_step_says_so_in_one_sentence(run_copy):
    state = newest(run_copy) / "state.json"
    state.write_text(state.read_text().replace('"step": 6,', '"step": 7,'))  # same size, other bytes
    with pytest.raises(UserError) as e:
        export_run(run_copy, step=6)
    assert e.value.code == "damaged_checkpoint"
    assert e.value.message == ("The checkpoint at step 6 cannot be exported because it is damaged: its state file "
                               "(state.json) does not hold the bytes that were written.")
    assert "2, 4" in e.value.hint


def test_export_needs_only_the_weights_of_a_checkpoint(run_copy):
    truncate(newest(run_copy) / "optimizer.pt")  # resume cannot use it; the LoRA in it is whole
    result = export_run(run_copy, step=6)
    assert result.step == 6 and result.verified and not result.warnings


def test_a_run_config_that_is_not_utf8_is_a_settings_error(run_copy):
    (run_copy / "config.toml").write_bytes((run_copy / "config.toml").read_bytes() + "# café\n".encode("cp1252"))
    with pytest.raises(ConfigError) as e:
        export_run(run_copy)
    assert "is not UTF-8 text; re-save it as UTF-8" in e.value.message


def engine(*args: str) -> tuple[int, list[ev.Event], str]:
    proc = subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True, env=ENV, timeout=600)
    return proc.returncode, [ev.from_json(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def test_the_cli_resume_and_export_fall_back_instead_of_failing(run_copy):
    (newest(run_copy) / "state.json").write_text("[6, 8]")
    code, events, err = engine("export", str(run_copy), "--events")
    assert code == 0, err
    assert [type(e) for e in events] == [ev.Warning, ev.Exported] and events[1].step == 4
    code, events, err = engine("train", str(run_copy), "--resume")
    assert code == 0, err
    assert any(isinstance(e, ev.Warning) and e.code == "damaged_checkpoint" for e in events)
    assert next(e for e in events if isinstance(e, ev.Started)).start_step == 4
    assert not [e for e in events if isinstance(e, ev.Error)]


def test_the_cli_reports_a_run_config_that_is_not_utf8_as_bad_config(run_copy):
    (run_copy / "config.toml").write_bytes(b"\xe9" + (run_copy / "config.toml").read_bytes())
    code, events, err = engine("train", str(run_copy), "--resume")
    assert code == 1
    (error,) = [e for e in events if isinstance(e, ev.Error)]
    assert error.code == "bad_config" and "not UTF-8" in error.message


# --- leftovers of interrupted writes -------------------------------------------------------------

LEFTOVERS = ("checkpoints/.step_000008.tmp/lora.safetensors", ".config.toml.ab_c1234.tmp",
             "samples/.step_000006_p0_s1234.png.k2j3h4g5.tmp", ".tstyle.safetensors.zz9_xx00.tmp")
NOT_LEFTOVERS = ("notes.txt", "samples/keep.png", "checkpoints/README", ".hidden", "x.tmp")


def plant(run_dir: Path, names) -> None:
    for name in names:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(b"half-written")


def test_a_resume_sweeps_the_leftovers_of_killed_writes_and_ends_bit_identical(tiny_model_dir, dataset, run_copy, straight_lora):
    plant(run_copy, LEFTOVERS + NOT_LEFTOVERS)
    finished, _ = resume(tiny_config(tiny_model_dir, dataset, run_copy, train=TRAIN))
    assert finished.status == "completed" and finished.step == 8
    assert not [p for p in run_copy.rglob("*") if p.name.endswith(".tmp") and p.name.startswith(".")]
    assert all((run_copy / name).read_bytes() == b"half-written" for name in NOT_LEFTOVERS)
    resumed = load_file(checkpoint.list_checkpoints(run_copy)[-1][1] / "lora.safetensors")
    assert resumed.keys() == straight_lora.keys() and all(torch.equal(resumed[k], straight_lora[k]) for k in resumed)


def test_a_new_start_sweeps_its_own_folder_only(tiny_model_dir, dataset, tmp_path):
    run_dir, neighbour = tmp_path / "killed-before-a-checkpoint", tmp_path / "another-run"
    plant(run_dir, (".config.toml.ab_c1234.tmp", "samples/.step_000000_p0_s1234.png.k2j3h4g5.tmp", "notes.txt"))
    plant(neighbour, (".config.toml.ab_c1234.tmp",))
    train(tiny_config(tiny_model_dir, dataset, run_dir, train={"max_steps": 2}), ev.ListSink())
    assert not (run_dir / ".config.toml.ab_c1234.tmp").exists()
    assert not (run_dir / "samples" / ".step_000000_p0_s1234.png.k2j3h4g5.tmp").exists()
    assert (run_dir / "notes.txt").exists() and (neighbour / ".config.toml.ab_c1234.tmp").exists()
