"""What a base model predicts and whether it uses zero terminal SNR, decided from its files without torch:
the rules in order, and the note the app shows when the model is chosen (the run's status line says the
same: tests/engine/models/test_v_pred_zero_snr.py)."""

import json
import struct

from lora_studio.core import prediction
from lora_studio.core.config import Config
from lora_studio.core.resources import resource


def _safetensors(path, names, metadata=None) -> None:
    """A header-only file: each tensor empty, which is all the decision reads."""
    header = {name: {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]} for name in names}
    blob = json.dumps({"__metadata__": metadata or {}, **header}).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


SDXL_KEY = "conditioner.embedders.1.model.ln_final.weight"
SD1_KEY = "cond_stage_model.transformer.text_model.final_layer_norm.weight"


def test_prediction_rules_in_order(tmp_path):
    sd2, v = {}, {"v_pred": None}
    decide = prediction.decide_prediction
    assert decide(v, tmp_path / "a.safetensors", "sdxl")[0] == "v"
    assert decide(v, tmp_path / "a.safetensors", "sdxl", "epsilon") == (
        "epsilon", "from model.prediction; note the file carries a v_pred marker")
    assert decide(sd2, tmp_path / "a.safetensors", "sd1", metadata={"modelspec.prediction_type": "v"})[0] == "v"
    assert decide(sd2, tmp_path / "v2-1_768-ema-pruned.safetensors", "sd2") == (
        "v", 'an SD2.x file with "768" in its name (SD2 768 models predict v)')
    assert decide(sd2, tmp_path / "sd1-768-finetune.safetensors", "sd1")[0] == "epsilon"  # the name rule is SD2-only
    pred, why = decide(sd2, tmp_path / "v2-1_512.safetensors", "sd2")
    assert pred == "epsilon" and 'model.prediction = "v"' in why
    (tmp_path / "custom.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert decide(sd2, tmp_path / "custom.safetensors", "sd2")[0] == "v"
    assert decide(sd2, tmp_path / "custom.safetensors", "sd2", "epsilon")[0] == "epsilon"


def test_zero_terminal_snr_rules_and_notes():
    decide = prediction.decide_zero_terminal_snr
    assert decide({"ztsnr": None}) == (True, "the file has a ztsnr key")
    assert decide({}, True) == (True, "from train.zero_terminal_snr")
    assert decide({}) == (False, "")
    assert prediction.prediction_note("v", "the file has a v_pred key", True, "the file has a ztsnr key") == (
        "v-prediction with zero terminal SNR, read from the file's v_pred and ztsnr keys")
    assert prediction.prediction_note("epsilon", "no v-prediction marker in the file") == (
        "epsilon prediction (no v-prediction marker in the file)")


def test_the_note_is_read_from_a_single_files_header(tmp_path):
    noob = tmp_path / "noobai-vpred.safetensors"
    _safetensors(noob, [SDXL_KEY, "v_pred", "ztsnr"])
    cfg = Config().replace(model={"base": str(noob)})
    assert prediction.note_for(cfg) == "v-prediction with zero terminal SNR, read from the file's v_pred and ztsnr keys"
    spec = tmp_path / "spec.safetensors"
    _safetensors(spec, [SD1_KEY], {"modelspec.prediction_type": "v"})
    assert prediction.note_for(Config().replace(model={"base": str(spec)})) == (
        "v prediction (the file's modelspec.prediction_type is v)")
    plain = tmp_path / "plain.safetensors"
    _safetensors(plain, [SD1_KEY])
    assert prediction.note_for(Config().replace(model={"base": str(plain)}, train={"zero_terminal_snr": True})) == (
        "epsilon prediction (no v-prediction marker in the file) with zero terminal SNR (from train.zero_terminal_snr)")
    assert prediction.note_for(Config().replace(model={"base": str(plain), "prediction": "v"})) == (
        "v prediction (from model.prediction)")


def test_the_note_is_read_from_a_folders_scheduler_config(tmp_path):
    world = Config().replace(model={"base": str(resource("models", "world"))})
    assert prediction.note_for(world) == "epsilon prediction (from the scheduler config)"
    folder = tmp_path / "vmodel"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}))
    assert prediction.note_for(Config().replace(model={"base": str(folder)})) == (
        "v-prediction (from the scheduler config) with zero terminal SNR (from the scheduler config)")


def test_no_note_where_only_loading_can_tell(tmp_path):
    lora = tmp_path / "style.safetensors"
    _safetensors(lora, ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"])
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"not read without torch")
    for base in ("", str(tmp_path / "gone.safetensors"), str(lora), str(ckpt), str(tmp_path)):
        assert prediction.note_for(Config().replace(model={"base": base})) is None, base
