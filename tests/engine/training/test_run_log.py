"""A real run's event stream, as the app sees it live and as its folder keeps it, folds to one RunState.

tests/core/data/real_run_stopped_and_resumed.jsonl is the event log `record_real_run` leaves (run this
file as a script with an output path to write a new one).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from engine_fixtures import make_dataset, tiny_config

from lora_studio.core import events as ev
from lora_studio.core.run_state import RunState
from lora_studio.core.runs import RunDir, read_state, summarize
from lora_studio.engine.process import StreamSink
from lora_studio.engine.training.loop import ScriptedCommands, train


def record_real_run(model_dir: Path, dataset: Path, run_dir: Path) -> list[ev.Event]:
    """Train 8 steps, stop at step 5, resume to the end; the events of both processes as the app reads
    them from the engine's stdout (the folder's event log is written beside them)."""
    cfg = tiny_config(model_dir, dataset, run_dir, train={"max_steps": 8, "checkpoint_every": 4, "log_every": 1},
                      sample={"every": 4, "prompts": ["tstyle, a circle"], "steps": 2})
    seen: list[ev.Event] = []
    for commands, resume in ((ScriptedCommands({5: ["stop"]}), False), (None, True)):
        stdout = io.StringIO()
        sink = StreamSink(stdout)
        train(cfg, sink, commands, resume=resume)
        sink.log_file.close()
        seen += [e for line in stdout.getvalue().splitlines() if (e := ev.from_json(line)) is not None]
    return seen


def test_live_replay_and_summary_agree(tiny_model_dir, tmp_path):
    dataset = make_dataset(tmp_path / "data" / "10_tstyle", n=4)
    run = RunDir(tmp_path / "run")
    live = RunState.replay(record_real_run(tiny_model_dir, dataset, run.path))
    replayed = read_state(run)

    assert (live.status, live.step, live.total_steps) == ("completed", 8, 8)
    assert [s for s, _ in live.losses] == list(range(1, 9))
    assert sorted(live.samples_by_step()) == [0, 4, 8]
    for name in ("status", "step", "total_steps", "losses", "samples", "warnings", "error", "exported", "ranking",
                 "outcome_text", "status_word"):
        got, want = getattr(replayed, name), getattr(live, name)
        assert (got() if callable(got) else got) == (want() if callable(want) else want), name
    # The folder keeps the newest checkpoints; the stream announced each as it was saved.
    assert replayed.checkpoints == list(run.checkpoint_steps()) and set(replayed.checkpoints) <= set(live.checkpoints)

    summary = summarize(run)
    assert (summary.status, summary.step, summary.total_steps, summary.loss) == (live.status, live.step, 8, live.loss)
    assert summary.exported == live.export_path and summary.status_text() == live.status_word()


if __name__ == "__main__":  # python tests/engine/training/test_run_log.py OUT.jsonl
    import tempfile

    from lora_studio.engine.models import tiny

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny.save_diffusers(Path(tmp) / "tiny-sd1", "sd1")
        record_real_run(model, make_dataset(Path(tmp) / "data" / "10_tstyle", n=4), Path(tmp) / "run")
        Path(sys.argv[1]).write_bytes(RunDir(Path(tmp) / "run").events.read_bytes())
