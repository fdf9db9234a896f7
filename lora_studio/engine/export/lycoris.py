"""The LyCORIS module suffixes (LoCon, LoHa, LoKr, DoRA) and what each network type is called.

A kohya-named module's suffixes tell a loader which algorithm it holds (ComfyUI/Forge `lora.py`,
A1111's `network_*.py`); shared/design/export-contract.md "LyCORIS files" lists them. No torch here:
`inspect` reads headers only.
"""

from __future__ import annotations

LORA_SUFFIXES = ("lora_down.weight", "lora_up.weight")
LOHA_SUFFIXES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_SUFFIXES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
# Tucker cores: other tools write them (use_tucker / cp); accepted by name, not written by us.
TUCKER_SUFFIXES = ("lora_mid.weight", "hada_t1", "hada_t2", "lokr_t2")
SUFFIXES = (*LORA_SUFFIXES, *LOHA_SUFFIXES, *LOKR_SUFFIXES, *TUCKER_SUFFIXES, "dora_scale", "alpha")

TYPE_NAMES = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}


def module_type(suffixes) -> str:
    """lora / loha / lokr, with "+dora" when the module carries a dora_scale."""
    keys = set(suffixes)
    kind = "loha" if keys & set(LOHA_SUFFIXES) else "lokr" if keys & set(LOKR_SUFFIXES) else "lora"
    return kind + ("+dora" if "dora_scale" in keys else "")


def network_type(module_suffixes: dict[str, set[str]], conv_modules: int) -> tuple[str, bool]:
    """(lora | locon | loha | lokr | mixed | none, dora) for a file's modules (name -> suffixes); a LoRA
    with modules on 4-d (convolution) weights beyond 1x1 projections is a LoCon."""
    kinds = {module_type(s).split("+")[0] for s in module_suffixes.values()}
    dora = any("dora_scale" in s for s in module_suffixes.values())
    if not kinds:
        return "none", dora
    if len(kinds) > 1:
        return "mixed", dora
    kind = kinds.pop()
    if kind == "lora" and conv_modules:
        kind = "locon"
    return kind, dora


def diffusers_loads(kind: str, dora: bool) -> tuple[bool, str]:
    """Whether diffusers' `load_lora_weights` applies the file to an SD1/SD2/SDXL pipeline, in words.

    Read from diffusers' lora_pipeline / lora_conversion_utils (0.42) and checked by
    tests/engine/export/test_network_export.py: its kohya converter takes lora_down/lora_up (LoRA and
    LoCon); for SD and SDXL it filters out dora_scale with a warning; its LoKr converters are for other
    model families, and LoHa it does not read."""
    if kind in ("loha", "lokr", "mixed"):
        return False, f"diffusers' load_lora_weights cannot load {TYPE_NAMES.get(kind, 'mixed')} files for Stable Diffusion (A1111, Forge, ComfyUI and InvokeAI can)"
    if dora:
        return True, "diffusers' load_lora_weights drops the DoRA magnitudes (dora_scale) and applies the rest as a plain LoRA"
    return True, "diffusers' load_lora_weights loads it"
