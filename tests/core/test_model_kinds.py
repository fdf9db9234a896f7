"""The model kinds are defined once (core/model_kinds.py); whoever needs per-kind facts keys them by it."""

import ast
from pathlib import Path

import pytest

import lora_studio
from lora_studio.core import config, fit, model_kinds
from lora_studio.core.model_kinds import CONFIG_NAMES, KINDS, LABELS, NAMES, config_name, shipped_config

PACKAGE = Path(lora_studio.__file__).parent


def test_every_kind_has_its_words_its_numbers_and_its_config():
    assert set(LABELS) == set(NAMES) == set(fit.ARCHS) == set(KINDS)
    assert config.CHOICES["model.kind"] == ("auto", *KINDS)
    assert model_kinds.ANY_LABEL == "SD1.x, SD2.x or SDXL"
    shipped = {shipped_config(k).name for k in KINDS} | {shipped_config("sd2", "v").name}
    assert shipped == set(CONFIG_NAMES)
    assert all((shipped_config(k, p) / "model_index.json").is_file() for k in KINDS for p in ("epsilon", "v"))


def test_the_sd2_v_model_has_its_own_config_folder():
    assert [config_name(k) for k in KINDS] == ["sd1", "sd2", "sdxl"]
    assert config_name("sd2", "v") == "sd2-v" and config_name("sdxl", "v") == "sdxl"
    with pytest.raises(ValueError, match="sd15"):
        config_name("sd15")


def _kind_tuples(path: Path) -> list[int]:
    """Lines of `path` that spell out the kinds again: a tuple, list or set literal of two or more kind keys."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            keys = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in KINDS]
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in KINDS]
        else:
            continue
        if len(set(keys)) >= 2:
            lines.append(node.lineno)
    return lines


def test_no_module_but_model_kinds_lists_the_kinds():
    # Per-kind tables of facts that only one module needs (fit's architecture numbers, the LDM key
    # prefixes of ldm_convert) are keyed by kind, and the test above checks fit's against KINDS.
    allowed = {"core/model_kinds.py", "core/fit.py", "engine/models/ldm_convert.py"}
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in allowed and (lines := _kind_tuples(path)):
            found[rel] = lines
    assert found == {}, f"the model kinds spelled out again outside core/model_kinds.py: {found}"
