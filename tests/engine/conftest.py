"""Shared engine fixtures: tiny real models on disk and small generated datasets."""

from __future__ import annotations

from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from lora_studio.engine.models import tiny

    return tiny.save_diffusers(tmp_path_factory.mktemp("models") / "tiny-sd1", "sd1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A factory: tiny_models(kind, prediction) -> diffusers folder, built once per session."""
    from lora_studio.engine.models import tiny

    made: dict[tuple[str, str], Path] = {}

    def get(kind: str = "sd1", prediction: str = "epsilon") -> Path:
        if (kind, prediction) not in made:
            made[kind, prediction] = tiny.save_diffusers(tmp_path_factory.mktemp("models") / f"tiny-{kind}-{prediction}", kind, prediction)
        return made[kind, prediction]

    return get
