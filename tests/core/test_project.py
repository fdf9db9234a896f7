import json
import tomllib
from pathlib import Path

import pytest

from lora_studio.core import project as project_mod
from lora_studio.core.config import load
from lora_studio.core.errors import ConfigError, UserError
from lora_studio.core.project import (
    Project,
    add_recent_project,
    create_project,
    default_demo_dir,
    forget_recent_project,
    open_project,
    recent_projects,
)


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "appconfig"))


def test_create_project_lays_out_the_folder_with_relative_paths(tmp_path):
    p = create_project(tmp_path / "My Style", preset="style-sd15")
    assert p.config_path == p.root / "lora_studio.toml"
    assert p.images_dir.is_dir()
    data = tomllib.loads(p.config_path.read_text())
    assert data["dataset"]["path"] == "images"  # relative: the project folder can move
    assert data["network"]["rank"] == 16 and data["train"]["batch_size"] == 2
    assert data["output"]["name"] == "my_style"
    cfg = p.load_config()
    assert Path(cfg.dataset.path) == p.images_dir  # loaded absolute


def test_save_keeps_outside_paths_absolute_and_inside_paths_relative(tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    p = create_project(tmp_path / "proj", dataset_path=art, base_model=str(tmp_path / "model.safetensors"))
    cfg = p.load_config()
    cfg = cfg.replace(model={"vae": str(p.root / "vae" / "x.safetensors")})
    p.save_config(cfg)
    data = tomllib.loads(p.config_path.read_text())
    assert data["dataset"]["path"] == str(art.resolve())
    assert data["model"]["vae"] == "vae/x.safetensors"
    assert p.load_config().model.vae == str(p.root / "vae" / "x.safetensors")


def test_create_refuses_an_existing_project(tmp_path):
    create_project(tmp_path / "p")
    with pytest.raises(UserError):
        create_project(tmp_path / "p")


def test_new_run_writes_an_absolute_config_into_a_fresh_run_dir(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    p = create_project(tmp_path / "proj", base_model=str(model))
    run = p.new_run()
    config_path, run_dir = run.config, run.path
    assert run_dir.parent == p.runs_dir and config_path == run_dir / "config.toml"
    data = tomllib.loads(config_path.read_text())
    assert data["output"]["dir"] == str(run_dir)
    assert data["dataset"]["path"] == str(p.images_dir)
    assert load(config_path).train.max_steps == 1500  # valid as written
    second = p.new_run().path
    assert second != run_dir  # same second: still a fresh folder
    assert p.list_runs() == sorted([run_dir, second], key=lambda r: r.name, reverse=True)


def test_new_run_refuses_invalid_settings_without_creating_a_folder(tmp_path):
    p = create_project(tmp_path / "proj")  # no base model
    with pytest.raises(ConfigError) as e:
        p.new_run()
    assert any(problem.key == "model.base" for problem in e.value.problems)
    assert p.list_runs() == [] and not p.runs_dir.exists()


def test_open_project_checks_the_folder(tmp_path):
    with pytest.raises(UserError):
        open_project(tmp_path)
    p = create_project(tmp_path / "p")
    assert open_project(p.config_path) == p
    p.config_path.write_text("[train]\nmax_steps = 'many'\n")
    with pytest.raises(ConfigError):
        open_project(p.root)


def test_recent_projects_newest_first_and_only_existing(tmp_path):
    a, b = create_project(tmp_path / "a"), create_project(tmp_path / "b")
    add_recent_project(a.root)
    add_recent_project(b.root)
    add_recent_project(a.root)
    assert recent_projects() == [a.root, b.root]
    (b.config_path).unlink()
    assert recent_projects() == [a.root]
    forget_recent_project(a.root)
    assert recent_projects() == []
    f = tmp_path / "appconfig" / "recent_projects.json"
    assert json.loads(f.read_text()) == []
    f.write_text("not json")
    assert recent_projects() == []


def test_default_demo_dir_is_in_documents():
    d = default_demo_dir()
    assert d.name == "LoRA Studio Demo" and isinstance(d, Path)


def test_project_properties(tmp_path):
    p = Project(tmp_path / "x")
    assert p.name == "x" and p.runs_dir.name == "runs" and p.cache_dir.name == "cache"
    assert p.thumbs_dir == p.cache_dir / "thumbs" and not p.exists()
    assert project_mod.is_project(tmp_path) is False


def test_collect_and_copy_images_keep_folders_and_captions(tmp_path):
    from PIL import Image

    from lora_studio.core.project import collect_images, copy_images

    art = tmp_path / "MyArt"
    (art / "10_ink").mkdir(parents=True)
    for name in ("a.png", "10_ink/b.png"):
        Image.new("RGB", (8, 8), (1, 2, 3) if name == "a.png" else (9, 9, 9)).save(art / name)
    (art / "a.txt").write_text("cap a")
    (art / "notes.md").write_text("not an image")
    loose = tmp_path / "c.png"
    Image.new("RGB", (8, 8), (5, 5, 5)).save(loose)
    found = collect_images([art, loose, tmp_path / "notes.md"])
    assert sorted(str(rel) for _, rel in found) == ["10_ink/b.png", "a.png", "c.png"]
    dest = tmp_path / "proj" / "images"
    dest.mkdir(parents=True)
    (dest / "c.txt").write_text("an orphan caption")  # must not become c.png's caption
    result = copy_images(found, dest)
    assert result.captions == 1 and len(result.copied) == 3
    assert (dest / "a.txt").read_text() == "cap a" and (dest / "10_ink" / "b.png").is_file()
    assert (dest / "c-2.png").is_file() and (dest / "c.txt").read_text() == "an orphan caption"
    again = copy_images(found, dest)
    assert again.copied == [] and again.already == 3


def test_a_new_project_refuses_a_folder_that_holds_other_files(tmp_path):
    busy = tmp_path / "Holiday photos"
    busy.mkdir()
    (busy / "beach.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match=r"already holds other files; choose an empty folder or a new name") as e:
        create_project(busy)
    assert e.value.code == "folder_not_empty"
    assert sorted(p.name for p in busy.iterdir()) == ["beach.jpg"]  # nothing written among the artist's files
    quiet = tmp_path / "Empty but for Finder"
    quiet.mkdir()
    (quiet / ".DS_Store").write_bytes(b"")
    assert create_project(quiet).exists()  # hidden files do not count
    assert create_project(tmp_path / "Not yet there").exists()
