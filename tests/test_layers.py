"""The three rooms: core imports neither torch nor Qt; gui never imports torch (or the engine)."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}, pkgutil, importlib\n" \
        f"pkg = sys.modules['{module}']\n" \
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n" \
        "    importlib.import_module(m.name)\n" \
        "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_imports_neither_torch_nor_qt():
    mods = _imported_after("lora_studio.core")
    assert "torch" not in mods
    assert not any(m.startswith("PySide6") for m in mods)
    assert not any(m.startswith("lora_studio.engine") or m.startswith("lora_studio.gui") for m in mods)


@pytest.mark.parametrize("forbidden", ["torch", "diffusers", "transformers", "lora_studio.engine"])
def test_gui_never_imports_the_engine_side(forbidden):
    mods = _imported_after("lora_studio.gui")
    assert forbidden not in mods


def test_cli_help_imports_nothing_heavy():
    code = "import sys; from lora_studio import cli; print('torch' in sys.modules, 'PySide6' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
