"""The training run: dataset → models → cache → steps with samples and checkpoints → export.

It talks out only through an event sink and listens only to a command source (stop / sample / save),
read at step boundaries, so the CLI, the app, the tests and multi-GPU all drive the same code.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from lora_studio.core import events as ev
from lora_studio.core.buckets import bucket_info
from lora_studio.core.config import Config
from lora_studio.core import optimizers as optimizer_spec
from lora_studio.core.errors import UserError, spell
from lora_studio.core.runs import RunDir
from lora_studio.engine.models.load import load_models
from lora_studio.engine.out_of_memory import out_of_memory_where, release_cached_memory
from lora_studio.engine.training import checkpoint, lora, optimizers, run_data, sampling, validation
from lora_studio.engine.training.cache import DiskCache, default_cache_dir
from lora_studio.engine.training.data import BatchPlan, Encodings
from lora_studio.engine.training.step import Trainer, resolve_precision


class CommandSource(Protocol):
    def poll(self) -> list[str]: ...


@dataclass
class ScriptedCommands:
    """Commands given ahead of time: {step: ["stop"]} (tests, and in-process use)."""

    at_step: dict[int, list[str]] = field(default_factory=dict)
    step: int = 0

    def poll(self) -> list[str]:
        return self.at_step.pop(self.step, [])


class NaNLoss(UserError):
    code = "nan_loss"


class _StoppedEarly(Exception):
    """A stop asked for before the first step: nothing was trained, so nothing is saved."""


def _prepare_run_dir(cfg: Config, resume: bool) -> Path:
    run_dir = Path(cfg.output.dir)
    if not resume and checkpoint.list_checkpoints(run_dir):
        raise UserError(
            f"The run folder {run_dir} already holds checkpoints of an earlier run.",
            hint="Add --resume to continue that run, or set output.dir to a new folder.",
            code="run_exists",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.sweep_leftovers(run_dir)  # an earlier process of this run killed mid-write left them
    RunDir(run_dir).samples_dir.mkdir(exist_ok=True)
    RunDir(run_dir).write_config(cfg)
    return run_dir


def train(cfg: Config, sink: ev.EventSink, commands: CommandSource | None = None, *, resume: bool = False) -> ev.Finished:
    commands = commands or ScriptedCommands()
    try:
        return _train(cfg, sink, commands, resume)
    except _StoppedEarly:
        finished = ev.Finished("stopped", 0)
        sink.emit(finished)
        return finished


def _train(cfg: Config, sink: ev.EventSink, commands: CommandSource, resume: bool) -> ev.Finished:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    mixed, weight_dtype = resolve_precision(cfg, torch.device(device_type))
    # A second run in one process (tests, the bench) may use another precision: accelerate keeps its state
    # in a singleton, so forget the previous run's choice (the process group itself is kept).
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.train.gradient_accumulation, cpu=device_type == "cpu")
    main = acc.is_main_process

    def emit(event: ev.Event) -> None:
        if main:
            sink.emit(event)

    def stop_requested() -> None:
        # Loading and caching can take minutes on a real model: a Stop then must not wait for step 1.
        # (Several processes agree on a stop only at step boundaries, where they can exchange it.)
        if acc.num_processes == 1 and "stop" in commands.poll():
            raise _StoppedEarly

    run_dir = Path(cfg.output.dir)
    if main:
        run_dir = _prepare_run_dir(cfg, resume)
    acc.wait_for_everyone()
    torch.manual_seed(cfg.train.seed)

    emit(ev.Status("loading", "Reading the dataset"))
    cfg, data = run_data.read(cfg, emit, acc.num_processes)
    held = data.held
    for warning in optimizer_spec.warnings(cfg):
        emit(ev.Warning(spell(warning), code="optimizer_settings"))

    stop_requested()
    emit(ev.Status("loading", "Loading the base model"))
    # fp8 storage starts from the compute dtype (bf16 / fp16 on a GPU): casting happens on the CPU, in Trainer.
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
    models = load_models(cfg.model, dtype=compute if weight_dtype == torch.float8_e4m3fn else weight_dtype,
                         zero_terminal_snr=cfg.train.zero_terminal_snr)
    for note in models.notes:
        emit(ev.Status("loading", note))
    if models.zero_terminal_snr and models.prediction != "v":
        # At zero SNR the last timestep's input is pure noise: an ε-model learns nothing there and its sampler
        # divides by zero (Lin et al. 2024 switch to v-prediction for this reason).
        emit(ev.Warning(spell('Zero terminal SNR is on with epsilon prediction, which cannot learn the last timestep; '
                              'set {model.prediction} = "v" (a v-prediction model) or turn {train.zero_terminal_snr} off.'),
                        code="zero_snr_epsilon"))
    stop_requested()
    trainer = Trainer(models, cfg, acc)
    plan = BatchPlan(data.items, cfg, acc.num_processes)
    validator = validation.Validator(trainer, held, cfg, DiskCache(default_cache_dir(run_dir))) if held and main else None

    saved = checkpoint.resume_from(run_dir, emit) if resume else None  # the newest intact one
    if resume and saved is None:
        emit(ev.Warning("There is no checkpoint to resume from; starting from step 0.", code="nothing_to_resume"))
    start_step = saved.state["step"] if saved else 0
    started_at = saved.state.get("training_started_at", time.time()) if saved else time.time()

    total = cfg.train.max_steps
    emit(ev.Started(str(run_dir), total, models.kind, models.prediction, start_step=start_step, device=str(acc.device), num_images=len(data.images.items)))

    emit(ev.Status("caching", "Encoding images and captions once"))
    enc = Encodings(trainer, plan, DiskCache(default_cache_dir(run_dir)))

    def caching_progress(done: int, total: int) -> None:
        stop_requested()
        if done % 20 == 0 or done == total:
            emit(ev.Status("caching", f"Encoded {done} of {total}"))

    enc.cache(caching_progress)
    if validator:
        validator.cache()
    if trainer.vae_tiled:
        emit(ev.Warning(
            f"The {'GPU' if trainer.device.type == 'cuda' else 'computer'} ran out of memory encoding an image whole at "
            f"{cfg.train.resolution} px, so the images are encoded in tiles (far less memory; the latents differ "
            f"slightly where the tiles meet). Training goes on.", code="vae_tiled"))
    trainer.offload_encoders(vae=enc.latents_cached, text=enc.text_cached)
    trainer.ready()
    if saved:
        weights, optim, sched, rng = saved.lora, saved.optimizer, saved.scheduler, saved.rng
        lora.load_lora_state(weights, *trainer.lora_modules)
        _resume_ema(trainer, saved.ema)  # the LoRA file holds the average; training goes on from its own weights
        trainer.optimizer.load_state_dict(optim)
        trainer.lr_scheduler.load_state_dict(sched)
        checkpoint.restore_rng(rng)
        trainer.micro_step = start_step * cfg.train.gradient_accumulation
        optimizers.training(trainer.optimizer)  # a schedule-free optimizer's state was saved in eval mode

    info = {
        "model_kind": models.kind, "prediction": models.prediction, "base_model": cfg.model.base, "base_name": models.base_name,
        "rank": cfg.network.rank, "alpha": cfg.network.alpha, "network": lora.network_state(cfg.network), "resolution": cfg.train.resolution,
        **data.info(), "max_steps": total, "batch_size": cfg.train.batch_size,
        "bucket_info": bucket_info(plan.items, plan.buckets), "training_started_at": started_at,
        "learning_rate": cfg.train.learning_rate, "text_encoder_lr": cfg.network.text_encoder_lr,
        "train_text_encoder": cfg.network.train_text_encoder, "optimizer": cfg.train.optimizer, "seed": cfg.train.seed,
        "mixed_precision": mixed, "clip_skip": cfg.model.clip_skip, "zero_terminal_snr": models.zero_terminal_snr,
        "ema": cfg.train.ema,
    }
    loop = _Loop(cfg, trainer, enc, plan, run_dir, emit, info, acc, validator)
    loop.last_checkpoint = start_step  # what a NaN loss keeps, and what finish() need not save again
    if start_step == 0:
        loop.validate(0)
        if cfg.sample.prompts:
            loop.sample(0)
    status = loop.run(start_step, commands)
    return loop.finish(status)


def _resume_ema(trainer: Trainer, state: dict | None) -> None:
    from lora_studio.engine.training.ema import LoraEMA

    if state is not None and trainer.ema is not None:
        trainer.ema.load(state)
    elif state is not None:  # train.ema turned off since: go on from the training weights, not the average
        with torch.no_grad():
            for p, t in zip(trainer.params, state["training_params"]):
                p.copy_(t.to(p.device, p.dtype))
    elif trainer.ema is not None:  # turned on since: the average starts from the resumed weights
        trainer.ema = LoraEMA(trainer.params, trainer.cfg.train.ema_decay, on_cpu=trainer.cfg.train.ema_on_cpu)


class _Loop:
    def __init__(self, cfg, trainer, enc, plan, run_dir, emit, info, acc, validator=None):
        self.cfg, self.trainer, self.enc, self.plan = cfg, trainer, enc, plan
        self.run_dir, self.emit, self.info, self.acc = run_dir, emit, info, acc
        self.validator = validator
        self.last_validation = -1
        self.validation_losses: dict[int, float] = {}
        self.step = 0
        self.last_checkpoint = 0
        self.last_sample = -1

    def run(self, start: int, commands: CommandSource) -> str:
        cfg, acc, t = self.cfg, self.acc, self.trainer
        total = cfg.train.max_steps
        check_every = 1 if t.device.type == "cpu" else cfg.train.log_every
        losses: list[torch.Tensor] = []
        window_start, window_steps = time.perf_counter(), 0
        self.step = start
        self.emit(ev.Status("training", f"Training from step {start} to {total}"))
        while self.step < total:
            if hasattr(commands, "step"):
                commands.step = self.step
            stop, want_sample, want_save = self._commands(commands)
            if stop:
                return "stopped"
            step_loss = None
            for slots in self.plan.micro_batches(self.step, acc.process_index):
                loss = t.train_step(self.enc.batch(slots))
                step_loss = loss if step_loss is None else step_loss + loss
            losses.append(step_loss / cfg.train.gradient_accumulation)
            self.step += 1
            window_steps += 1
            if self.step % check_every == 0 or self.step == total or (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0):
                # The only host-device sync: every log_every steps on GPU (each step on CPU, where it is free).
                values = torch.stack(losses).float().cpu()
                if not torch.isfinite(values).all():
                    self._nan()
            if self.step % cfg.train.log_every == 0 or self.step == total:
                elapsed = time.perf_counter() - window_start
                per_step = elapsed / max(window_steps, 1)
                samples = cfg.train.batch_size * cfg.train.gradient_accumulation * acc.num_processes
                self.emit(ev.Progress(
                    self.step, total, self.plan.epoch_of_step(self.step - 1), float(torch.stack(losses).mean()),
                    t.lr, samples / per_step if per_step else 0.0, per_step * (total - self.step)))
                losses.clear()
                window_start, window_steps = time.perf_counter(), 0
            every = cfg.sample.every
            v_every = cfg.train.validate_every or every
            if v_every and self.step % v_every == 0 and self.step < total:
                self.validate(self.step)
            if cfg.sample.prompts and ((every and self.step % every == 0) or want_sample) and self.step < total:
                self.sample(self.step)
                window_start = time.perf_counter()
            if (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0 and self.step < total) or want_save:
                self.save()
                window_start = time.perf_counter()
        return "completed"

    def _commands(self, commands: CommandSource) -> tuple[bool, bool, bool]:
        got = commands.poll() if self.acc.is_main_process else []
        flags = [c in got for c in ("stop", "sample", "save")]
        if self.acc.num_processes > 1:
            # Rank 0 reads stdin; every rank must agree. (One process: no device tensor, so no sync.)
            summed = self.acc.reduce(torch.tensor(flags, dtype=torch.float32, device=self.trainer.device), reduction="sum")
            flags = [bool(x > 0) for x in summed.tolist()]
        return tuple(flags)

    def _nan(self) -> None:
        kept = f"the last good checkpoint (step {self.last_checkpoint}) is kept" if self.last_checkpoint else "no checkpoint had been saved yet"
        raise NaNLoss(
            f"The loss became NaN or infinite by step {self.step}, so training stopped; {kept}.",
            hint="Lower train.learning_rate (for example to half), or set train.mixed_precision = \"bf16\" / \"no\" instead of \"fp16\".",
        )

    @contextlib.contextmanager
    def _judged(self):
        """The weights a run is judged by and gives, around sampling, validation, checkpoints and the end:
        a schedule-free optimizer's averaged weights, then (train.ema) the moving average swapped in over
        them. Both nest; afterwards the LoRA holds what training goes on from."""
        ema = self.trainer.ema
        with optimizers.evaluating(self.trainer.optimizer), (ema.judged() if ema is not None else contextlib.nullcontext()):
            yield

    def sample(self, step: int) -> None:
        self.last_sample = step
        if not self.acc.is_main_process:
            return
        with self._judged():  # schedule-free / EMA: the averaged weights are the result
            self._sample(step)

    def _sample(self, step: int) -> None:
        self.emit(ev.Status("sampling", f"Sampling {len(self.cfg.sample.prompts)} prompt(s) at step {step}"))
        t = self.trainer
        moved = self._to_device()
        unet = self.acc.unwrap_model(t.unet)
        tes = [self.acc.unwrap_model(te) for te in t.text_encoders]
        try:
            results = sampling.generate(t.models, unet, tes, self.cfg, step, RunDir(self.run_dir).samples_dir, t.device, self.acc.autocast)
        except Exception as e:
            where = out_of_memory_where(e)
            if where is None:
                raise
            # Samples are for watching; they must not end the run. generate() restored the models' state.
            release_cached_memory()
            results = []
            s = self.cfg.sample
            size = f"{s.width or self.cfg.train.resolution}×{s.height or self.cfg.train.resolution}"
            self.emit(ev.Warning(
                f"The sample images at step {step} were skipped: the {'GPU' if where == 'gpu' else 'computer'} ran out of "
                f"memory while making them at {size}; training goes on. Lower sample.width / sample.height, or sample "
                f"less often (sample.every).", code="sample_out_of_memory"))
        finally:
            self._to_cpu(moved)
        for index, prompt, seed, path in results:
            self.emit(ev.Sample(step, str(path), prompt, seed, index))
        self.emit(ev.Status("training", "Training"))

    def _to_device(self) -> list[torch.nn.Module]:
        t = self.trainer
        moved = [m for m in (t.models.vae, *t.models.text_encoders) if m.device != t.device]
        for m in moved:
            m.to(t.device)
        return moved

    def _to_cpu(self, moved) -> None:
        for m in moved:
            m.to("cpu")

    def save(self) -> Path | None:
        # Schedule-free: a checkpoint holds the averaged weights, what an export or a comparison of it must see
        # (a resume switches back, optimizers.training).
        with self._judged():
            return self._save()

    def _save(self) -> Path | None:
        path = None
        if self.acc.is_main_process:
            self.emit(ev.Status("saving", f"Saving a checkpoint at step {self.step}"))
            t = self.trainer
            weights = lora.lora_state(*t.lora_modules)
            state = {**self.info, "step": self.step, "epoch": self.plan.epoch_of_step(max(self.step - 1, 0)),
                     "num_epochs": self.plan.epoch_of_step(self.cfg.train.max_steps - 1)}
            path = checkpoint.save(self.run_dir, self.step, weights, t.optimizer, t.lr_scheduler, state, self.cfg.train.keep_checkpoints,
                                   ema=t.ema.state() if t.ema is not None else None)
            self.last_checkpoint = self.step
            self.emit(ev.Checkpoint(self.step, str(path)))
        self.acc.wait_for_everyone()
        return path

    def validate(self, step: int) -> None:
        if self.validator is None:
            return
        self.last_validation = step
        self.emit(ev.Status("sampling", f"Validation loss at step {step}"))
        with self._judged():
            loss = round(self.validator.loss(), 6)
        self.validation_losses[step] = loss
        self.emit(ev.Validation(step, loss, self.validator.images))

    def finish(self, status: str) -> ev.Finished:
        # No step is taken after this: a schedule-free optimizer stays on its averaged weights for the final
        # samples, validation, checkpoint, ranking and export.
        with self._judged():
            return self._finish(status)

    def _finish(self, status: str) -> ev.Finished:
        if status == "completed" and self.last_validation != self.step:
            self.validate(self.step)
        if self.cfg.sample.prompts and status == "completed" and self.last_sample != self.step:
            self.sample(self.step)  # the final result, and the export's preview
        if self.last_checkpoint != self.step or not checkpoint.list_checkpoints(self.run_dir):
            self.save()
        export_path = ""
        if self.acc.is_main_process:
            if self.cfg.sample.rank and status == "completed":
                self._rank()  # before the export, so a run's last two events stay exported, finished
            export_path = self._export()
        self.acc.wait_for_everyone()
        finished = ev.Finished(status, self.step, export_path)
        self.emit(finished)
        return finished

    def _rank(self) -> None:
        from lora_studio.engine.evaluate.rank import rank_trained_run

        self.emit(ev.Status("sampling", "Scoring the checkpoints (style, prompts, validation loss)"))
        moved = self._to_device()
        try:
            steps = [s for s, _ in checkpoint.list_checkpoints(self.run_dir)]
            rec = rank_trained_run(self.trainer, self.cfg, self.run_dir, steps, self.validation_losses)
        finally:
            self._to_cpu(moved)
        if rec is not None:
            from lora_studio.engine.evaluate.rank import save_ranking, to_event

            save_ranking(self.run_dir, rec)
            self.emit(to_event(rec))

    def _export(self) -> str:
        from lora_studio.engine.export.export import export_run
        from lora_studio.engine.export.verify import reference_modules

        self.emit(ev.Status("exporting", "Writing the LoRA file"))
        m = self.trainer.models
        # The architecture, rebuilt bare on the meta device (no memory): the trained modules carry
        # peft wrappers, while the verification must see the base model as a UI loads it.
        with torch.device("meta"):
            unet = type(m.unet).from_config(m.unet.config)
            tes = [type(te)(te.config) for te in m.text_encoders]
        reference = reference_modules(m.kind, unet, tes)
        out = self.run_dir / f"{self.cfg.output.name}.safetensors"
        result = export_run(self.run_dir, self.step, out, reference=reference)
        self.emit(ev.Exported(str(result.path), result.step, result.verified, list(result.problems), str(result.preview or "")))
        return str(result.path)
