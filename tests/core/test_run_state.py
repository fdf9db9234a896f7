"""core/run_state.py: one fold of the event stream, live or replayed, into what a run shows."""

from __future__ import annotations

from pathlib import Path

from lora_studio.core import events as ev
from lora_studio.core.run_state import RunState

DATA = Path(__file__).with_name("data")
# Written by a real tiny run (tests/engine/training/test_run_log.py::record_real_run): 8 steps, stopped
# at step 5, resumed to the end; samples at 0, 4, 8; checkpoints at 4, 5 and 8; exported at the stop and
# at the end; the ranking picks step 4.
REAL_RUN = DATA / "real_run_stopped_and_resumed.jsonl"


def progress(step: int, loss: float = 0.1, total: int = 40, t: float | None = None) -> ev.Progress:
    return ev.Progress(step, total, 0, loss, 1e-4, 2.0, (total - step) * 0.5, time=float(step) if t is None else t)


def test_a_run_from_start_to_finish(tmp_path):
    events = [
        ev.Status("loading", "Reading the dataset"),
        ev.Warning("Skipped broken.png: not an image", code="bad_image"),
        ev.Warning("2 images have no caption file", code="missing_captions"),
        ev.Started(str(tmp_path), 40, "sd1", device="cpu", time=3.0),
        ev.Sample(0, str(tmp_path / "s0.png"), "p", 1),
        *(progress(s) for s in (10, 20)),
        ev.Validation(20, 0.3),
        ev.Checkpoint(20, str(tmp_path / "c20")),
        *(progress(s) for s in (30, 40)),
        ev.Exported(str(tmp_path / "my_style.safetensors"), 40, verified=True),
        ev.Ranking(20, "Step 20: style 0.8."),
        ev.Finished("completed", 40, str(tmp_path / "my_style.safetensors")),
    ]
    state = RunState.replay(events)
    assert (state.status, state.step, state.total_steps, state.started_at) == ("completed", 40, 40, 3.0)
    assert state.losses == [(10, 0.1), (20, 0.1), (30, 0.1), (40, 0.1)] and state.validation == [(20, 0.3)]
    assert [w.code for w in state.warnings] == ["bad_image", "missing_captions"]  # every warning, not the last
    assert state.checkpoints == [20] and not state.resumable
    assert state.export_path.endswith("my_style.safetensors") and state.ranking.step == 20
    assert list(state.samples_by_step()) == [0]
    assert state.rate == 1.0  # steps per second, from the events' own times
    assert state.outcome_text() == f"Finished: 40 steps. Saved my_style.safetensors in {tmp_path}."
    assert state.status_word() == "Completed"


def test_the_activity_line_follows_the_engine():
    state = RunState()
    assert state.apply(ev.Status("caching")).activity == "Preparing the images…"
    assert state.apply(ev.Status("sampling", "Sampling 2 prompt(s) at step 0")).activity == "Sampling 2 prompt(s) at step 0"
    assert state.apply(ev.Started("r", 100, "sd1", start_step=40, device="cuda:0")).activity == "Started from step 40 on cuda:0: 100 steps."
    assert state.apply(ev.Checkpoint(50, "c")).activity == "Saved a checkpoint at step 50."
    assert state.apply(ev.Exported("x/a.safetensors", problems=["bad key"])).activity == "Exported a.safetensors (1 problem(s) found)."


def test_a_resumed_attempt_replaces_what_came_after_its_checkpoint(tmp_path):
    first = [ev.Started(str(tmp_path), 40, "sd1"), ev.Sample(0, "s0.png", "p", 1), *(progress(s, 0.2) for s in (10, 20, 30)),
             ev.Sample(30, "s30.png", "p", 1), ev.Checkpoint(20, "c20"), ev.Error("out_of_memory", "The GPU ran out of memory."),
             ev.Finished("failed", 30)]
    state = RunState.replay(first)
    assert (state.status, state.error.code, state.resumable) == ("failed", "out_of_memory", True)
    assert state.outcome_text() == "Training did not finish. Resume continues from the last checkpoint."
    state.apply(ev.Warning("A warning of the second attempt"))
    assert state.finished is None and state.error is None  # the next attempt began
    assert [w.message for w in state.warnings] == ["A warning of the second attempt"]
    state.apply(ev.Started(str(tmp_path), 40, "sd1", start_step=20))
    assert [s for s, _ in state.losses] == [10, 20] and [s.step for s in state.samples] == [0]
    for s in (30, 40):
        state.apply(progress(s, 0.1))
    assert state.losses == [(10, 0.2), (20, 0.2), (30, 0.1), (40, 0.1)]
    assert state.apply(ev.Finished("completed", 40)).status == "completed"


def test_a_run_tried_again_from_step_0_starts_its_pictures_over():
    state = RunState.replay([ev.Started("r", 10, "sd1"), ev.Sample(0, "s0.png", "p", 1), ev.Validation(0, 0.5),
                             progress(2, total=10), ev.Finished("failed", 2)])
    state.apply(ev.Started("r", 10, "sd1"))
    assert state.samples == [] and state.validation == [] and state.losses == [] and state.step == 0


def test_a_run_killed_before_its_first_checkpoint_says_start_again():
    state = RunState.replay([ev.Started("r", 40, "sd1"), progress(10)])
    assert (state.status, state.resumable) == ("interrupted", False)
    assert state.outcome_text() == "Training did not finish. No checkpoint was saved; start again."
    assert state.status_word() == "Interrupted (no checkpoint)"
    assert RunState.replay([ev.Started("r", 40, "sd1"), ev.Checkpoint(20, "c")]).status_word() == "Interrupted"
    assert RunState().outcome_text() == "This run has not started."
    assert RunState.replay([ev.Finished("stopped", 0)]).outcome_text() == "Stopped before the first step; nothing was saved."


def test_the_speed_is_measured_over_the_newest_steps():
    state = RunState()
    for s in range(1, 41):
        state.apply(progress(s, t=s * (1.0 if s <= 10 else 0.5)))
    assert state.rate == 2.0  # the last 30 events only
    state.apply(progress(5, t=100.0))  # a resume went back: a new measurement
    assert state.rate is None


def test_a_non_finite_loss_is_not_a_point():
    state = RunState.replay([progress(1, 0.2), progress(2, float("nan")), progress(3, 0.1)])
    assert state.losses == [(1, 0.2), (3, 0.1)] and state.step == 3


def test_a_real_runs_log_folds_to_what_it_did():
    state = RunState.replay(ev.read_jsonl(REAL_RUN))
    assert (state.status, state.step, state.total_steps) == ("completed", 8, 8)
    assert [s for s, _ in state.losses] == list(range(1, 9))  # the stop at 5 and the resume: no step twice
    assert sorted(state.samples_by_step()) == [0, 4, 8]
    assert state.checkpoints == [4, 5, 8]
    assert [(Path(e.path).name, e.step) for e in state.exported] == [("tstyle.safetensors", 5), ("tstyle.safetensors", 8)]
    assert state.export_path.endswith("tstyle.safetensors") and state.error is None and state.ranking.step == 4
    assert state.outcome_text().startswith("Finished: 8 steps. Saved tstyle.safetensors in /")


def test_a_run_that_failed_before_its_first_step_says_why_not_start_again():
    error = ev.Error("missing_model", "The base model /m/gone.safetensors does not exist.", hint="Set model.base.")
    state = RunState.replay([ev.Status("Loading"), error, ev.Finished("failed", 0)])
    assert state.outcome_text() == "Failed before the first step: The base model /m/gone.safetensors does not exist."
