"""One record for a comparison image: the compare_cell event on the wire and a cell of grid.json on disk."""

import json

from lora_studio.core import events as ev

# A cell exactly as grid.json has held it since the first version (and as the engine still writes it).
OLD_ENTRY = {"step": 200, "strength": 0.5, "trigger": False, "prompt_index": 1, "prompt": "a circle", "seed": 1235,
             "file": "step_000200_s0.50_t0_p1.png"}


def cell(path: str) -> ev.CompareCell:
    return ev.CompareCell(200, 0.5, False, 1, "a circle", 1235, path, time=1_700_000_000.0)


def test_the_wire_format_is_unchanged():
    line = json.loads(cell("/runs/r/compare/x/step_000200_s0.50_t0_p1.png").to_json())
    assert line == {"v": 1, "type": "compare_cell", "time": 1_700_000_000.0, "step": 200, "strength": 0.5,
                    "trigger": False, "prompt_index": 1, "prompt": "a circle", "seed": 1235,
                    "path": "/runs/r/compare/x/step_000200_s0.50_t0_p1.png"}
    assert ev.from_json(json.dumps(line)) == cell("/runs/r/compare/x/step_000200_s0.50_t0_p1.png")


def test_grid_json_stores_the_same_fields_with_the_file_relative(tmp_path):
    entry = cell(str(tmp_path / "step_000200_s0.50_t0_p1.png")).grid_entry(tmp_path)
    assert entry == OLD_ENTRY and list(entry) == list(OLD_ENTRY)  # key for key, in the order earlier versions wrote
    back = ev.CompareCell.from_grid_entry(json.loads(json.dumps(entry)), tmp_path)
    assert back.path == str((tmp_path / OLD_ENTRY["file"]).resolve())
    assert (back.step, back.strength, back.trigger, back.prompt_index, back.prompt, back.seed) == (200, 0.5, False, 1, "a circle", 1235)


def test_old_and_hand_written_entries_load_leniently(tmp_path):
    read = ev.CompareCell.from_grid_entry
    assert read(OLD_ENTRY, tmp_path).seed == 1235
    bare = read({"step": 0, "strength": 0, "trigger": True, "prompt_index": 0, "file": "base.png"}, tmp_path)
    assert (bare.strength, bare.prompt, bare.seed) == (0.0, "", 0)  # prompt and seed are optional; 0 is a float
    assert read(OLD_ENTRY | {"added_later": 1}, tmp_path) is not None  # fields are only ever added
    assert read(OLD_ENTRY | {"seed": "7"}, tmp_path).seed == 0
    for broken in ({k: v for k, v in OLD_ENTRY.items() if k != "file"}, OLD_ENTRY | {"step": "200"},
                   OLD_ENTRY | {"trigger": 1}, OLD_ENTRY | {"prompt_index": True}, OLD_ENTRY | {"strength": float("nan")},
                   OLD_ENTRY | {"file": ""}, OLD_ENTRY | {"file": "../../escape.png"}, "not a cell"):
        assert read(broken, tmp_path) is None, broken
