from pathlib import Path

import pytest

from lora_studio.core.model_finder import describe_model, find_base_models, find_lora_dirs


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LORA_STUDIO_SEARCH_HOME", str(home))
    monkeypatch.delenv("LORA_STUDIO_MODEL_DIRS", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    return home


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_finds_webui_and_comfy_checkpoints_and_skips_pickles(home):
    a1111 = _touch(home / "stable-diffusion-webui/models/Stable-diffusion/v1-5.safetensors")
    nested = _touch(home / "stable-diffusion-webui/models/Stable-diffusion/anime/any.safetensors")
    _touch(home / "stable-diffusion-webui/models/Stable-diffusion/old.ckpt")
    comfy = _touch(home / "AI/ComfyUI_windows_portable/ComfyUI/models/checkpoints/sdxl.safetensors")
    diffusers_dir = home / "ComfyUI/models/checkpoints/my-diffusers"
    _touch(diffusers_dir / "model_index.json")
    _touch(diffusers_dir / "unet/diffusion_pytorch_model.safetensors")
    found = set(find_base_models())
    assert {a1111, nested, comfy, diffusers_dir} <= found
    assert not any(p.suffix == ".ckpt" for p in found)
    assert not any("unet" in p.parts for p in found)  # a diffusers folder counts once, as a folder


def test_finds_hugging_face_snapshots(home, monkeypatch):
    snap = home / ".cache/huggingface/hub/models--runwayml--stable-diffusion-v1-5/snapshots/abc123"
    _touch(snap / "model_index.json")
    _touch(home / ".cache/huggingface/hub/models--openai--clip/snapshots/def/config.json")  # not a pipeline
    assert find_base_models() == [snap]
    assert describe_model(snap) == "runwayml/stable-diffusion-v1-5"
    other = home / "elsewhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert find_base_models() == []


def test_extra_model_dirs_and_lora_dirs(home, tmp_path, monkeypatch):
    extra = tmp_path / "nas"
    m = _touch(extra / "m.safetensors")
    monkeypatch.setenv("LORA_STUDIO_MODEL_DIRS", str(extra))
    assert m in find_base_models()
    lora = home / "stable-diffusion-webui-forge/models/Lora"
    lora.mkdir(parents=True)
    comfy_loras = home / "ComfyUI/models/loras"
    comfy_loras.mkdir(parents=True)
    assert set(find_lora_dirs()) == {lora, comfy_loras}
    assert describe_model(m) == "m.safetensors"


def test_empty_home_finds_nothing(home):
    assert find_base_models() == [] and find_lora_dirs() == []
