"""One LoRA training step, and the state it needs (models on the device, optimizer, schedules).

Follows the shape of diffusers' train_text_to_image_lora.py (LoRA params in fp32, frozen base in the
compute dtype, accelerate for mixed precision and data parallelism) with the engine's speed-ups:
latents and text-encoder outputs are computed once (`encode_batch`) instead of every step, and the loss
is never read back inside the step (no host-device sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from lora_studio.core.config import Config
from lora_studio.core.errors import UserError
from lora_studio.engine.models.load import Models
from lora_studio.engine.out_of_memory import out_of_memory_where, release_cached_memory
from lora_studio.engine.training import conditioning, lora, losses, optimizers, timesteps
from lora_studio.engine.training.ema import LoraEMA
from lora_studio.engine.training.fp8 import store_in_fp8

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _to(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    # Models are loaded in their storage dtype already; casting again only makes diffusers warn.
    if getattr(module, "dtype", None) == dtype:
        module.to(device)
    else:
        module.to(device, dtype=dtype)


def resolve_precision(cfg: Config, device: torch.device) -> tuple[str, torch.dtype]:
    """(accelerate mixed_precision, frozen-weight storage dtype). fp32 on CPU: CPU autocast is slow."""
    mp = cfg.train.mixed_precision
    if mp == "auto":
        mp = "no" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    base = cfg.train.base_weights
    if base == "auto":
        base = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}[mp]
    if base == "fp8":
        return mp, torch.float8_e4m3fn
    return mp, DTYPES[base]


class Trainer:
    def __init__(self, models: Models, cfg: Config, accelerator):
        self.models, self.cfg, self.accelerator = models, cfg, accelerator
        self.device = accelerator.device
        _, self.weight_dtype = resolve_precision(cfg, self.device)
        self.compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
        self.train_te = cfg.network.train_text_encoder
        self.noise_scheduler = DDPMScheduler.from_config(models.scheduler_config)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)
        weights = timesteps.timestep_weights(cfg.train, self.alphas_cumprod)
        self._timestep_weights = None if weights is None else weights.to(self.device)  # None: a plain randint
        self.micro_step = 0  # micro-batches seen; seeds each step's noise so resume is exact
        self.vae_tiled = False  # set when an image did not fit the VAE whole: it encodes in tiles from then on

        # The UNet goes onto the GPU only in `ready()`, after the images and captions are encoded: then the
        # VAE and text encoders have left, and caching never holds every model at once (SDXL's peak).
        tes = models.text_encoders
        for te in tes:
            self._place(te)
        _to(models.vae, self.device, torch.float32)  # fp32: SDXL's VAE overflows to NaN in fp16
        self.unet = models.unet
        self.text_encoders = tes
        self.optimizer = None
        self.lr_scheduler = None
        self.params: list[torch.nn.Parameter] = []
        self.ema: LoraEMA | None = None  # train.ema, built with the optimizer
        net = cfg.network
        self._te_params = []
        if self.train_te:
            self._te_params = [p for te in tes for p in lora.add_lora(te, lora.text_encoder_network(net))]

    def ready(self) -> None:
        """Put the UNet on the device with its LoRA, build the optimizer and hand both to accelerate."""
        if self.optimizer is not None:
            return
        cfg, net, unet, tes = self.cfg, self.cfg.network, self.models.unet, self.models.text_encoders
        self._place(unet)
        params = lora.add_lora(unet, lora.unet_network(unet, net))
        groups = [{"params": params, "lr": cfg.train.learning_rate}]
        if self.train_te:
            groups.append({"params": self._te_params, "lr": net.text_encoder_lr})
        self.params = [p for g in groups for p in g["params"]]
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if self.train_te:
                for te in tes:
                    te.gradient_checkpointing_enable()
        if cfg.train.channels_last and self.device.type == "cuda":
            unet.to(memory_format=torch.channels_last)
        self.optimizer = self._optimizer(groups)
        # Stepped by us once per optimizer step (not through accelerate, which would step it once per
        # process), so schedules read the same on one GPU or several.
        self.lr_scheduler = optimizers.schedule(cfg, self.optimizer)
        optimizers.training(self.optimizer)  # schedule-free: steps are taken in train mode
        if cfg.train.ema:
            self.ema = LoraEMA(self.params, cfg.train.ema_decay, on_cpu=cfg.train.ema_on_cpu)
        prepared = self.accelerator.prepare(unet, *(tes if self.train_te else []), self.optimizer)
        self.unet, self.optimizer = prepared[0], prepared[-1]
        self.text_encoders = list(prepared[1:-1]) if self.train_te else tes
        if cfg.train.compile:
            self.unet = torch.compile(self.unet)
        unet.train()
        for te in tes:
            te.train(self.train_te)

    def offload_encoders(self, *, vae: bool, text: bool) -> None:
        """After caching, what the steps no longer use leaves the GPU (it comes back only to sample)."""
        if self.device.type != "cuda":
            return
        if vae:
            self.models.vae.to("cpu")
        if text and not self.train_te:
            for te in self.models.text_encoders:
                te.to("cpu")
        torch.cuda.empty_cache()

    def _place(self, module: torch.nn.Module) -> None:
        if self.weight_dtype == torch.float8_e4m3fn:
            # fp8 storage, upcast layer by layer to the compute dtype (engine/training/fp8.py says why not diffusers'
            # layerwise casting). Cast where the model was loaded (the CPU), so full precision never reaches the GPU.
            if module is self.models.unet:
                store_in_fp8(module, self.compute_dtype)
                module.to(self.device)
            else:  # text encoders (transformers) keep the compute dtype
                _to(module, self.device, self.compute_dtype)
        else:
            _to(module, self.device, self.weight_dtype)

    def _optimizer(self, groups) -> torch.optim.Optimizer:
        return optimizers.build(self.cfg, groups, self.device)

    @property
    def lora_modules(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        return self.models.unet, (self.models.text_encoders if self.train_te else [])

    # -- conditioning ---------------------------------------------------------------------------

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.models
        return conditioning.encode_text(m.kind, self.text_encoders, m.tokenizers, captions, self.device, self.cfg.model.clip_skip)

    @torch.no_grad()
    def encode_latents(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        vae = self.models.vae
        pixels = pixel_values.to(self.device, torch.float32)
        try:
            dist = vae.encode(pixels).latent_dist
        except Exception as e:
            if self.vae_tiled or out_of_memory_where(e) is None:
                raise
            # The fp32 VAE encode of one large image is caching's peak (2.7 GB for SDXL at 1024 px). Rather
            # than fail the run, encode in overlapping tiles (diffusers' tiled VAE): a fraction of the
            # memory, latents that differ slightly where tiles blend. train.py tells the artist.
            release_cached_memory()
            vae.enable_tiling()
            self.vae_tiled = True
            dist = vae.encode(pixels).latent_dist
        latents = dist.sample(generator=generator) * vae.config.scaling_factor
        if not torch.isfinite(latents).all():
            raise UserError(
                "The VAE produced NaN latents for an image.",
                hint="The base model's VAE is broken in this precision; set model.vae to a working VAE (for SDXL, the fp16-fix VAE).",
                code="nan_latents",
            )
        return latents.cpu()

    def encode_batch(self, pixel_values, captions, original_sizes, crop_top_lefts, generator=None) -> dict:
        """The cached form of a batch: latents, and text embeddings when the text encoders are frozen."""
        batch = {"latents": self.encode_latents(pixel_values, generator), "captions": list(captions)}
        if self.models.kind == "sdxl":
            batch["time_ids"] = conditioning.sdxl_time_ids(original_sizes, crop_top_lefts, tuple(pixel_values.shape[-2:]))
        if not self.train_te:
            with torch.no_grad():
                embeds, pooled = self.encode_text(list(captions))
            batch["prompt_embeds"] = embeds.cpu()
            if pooled is not None:
                batch["pooled"] = pooled.cpu()
        return batch

    # -- the step -------------------------------------------------------------------------------

    def _noise_generator(self) -> torch.Generator:
        rank = self.accelerator.process_index
        seed = (self.cfg.train.seed * 1_000_003 + self.micro_step * 7919 + rank) % (2**63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def train_step(self, batch: dict) -> torch.Tensor:
        """One micro-batch (an optimizer step every gradient_accumulation of them). Returns the loss."""
        self.ready()
        acc = self.accelerator
        g = self._noise_generator()
        self.micro_step += 1
        with acc.accumulate(self.unet):
            latents = self._on_device(batch["latents"])
            noise, t = self.draw_noise(latents.shape, g)
            loss = self.loss(batch, noise, t, latents=latents)
            acc.backward(loss)
            if acc.sync_gradients and self.cfg.train.max_grad_norm:
                acc.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
            self.optimizer.step()
            if acc.sync_gradients:
                self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def draw_noise(self, shape: torch.Size, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, timesteps) for latents of `shape`, drawn from `g` alone: the same seed gives the same step."""
        bsz = shape[0]
        noise = torch.randn(shape, generator=g, device=self.device)
        if self.cfg.train.noise_offset:
            # Noise offset (Guttenberg 2023): lets the model learn very dark / very bright images.
            noise = noise + self.cfg.train.noise_offset * torch.randn((bsz, shape[1], 1, 1), generator=g, device=self.device)
        n = self.noise_scheduler.config.num_train_timesteps
        t = timesteps.draw_timesteps(self.cfg.train, self._timestep_weights, n, bsz, g, self.device)
        return noise, t

    def loss(self, batch: dict, noise: torch.Tensor, t: torch.Tensor, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The loss the step backpropagates (min-SNR weighted if asked, batch mean), for given noise and
        timesteps: the seam where tests compare it with the diffusers recipe's (bench/reference.py)."""
        pred, target = self._prediction(batch, noise, t, latents=latents)
        mask = batch.get("mask")  # dataset.masked_loss: [B, 1, h, w] on the latent grid (training/data.py)
        loss = losses.per_image_loss(self.cfg.train, pred, target, t, self.alphas_cumprod,
                                     mask=None if mask is None else self._on_device(mask))
        if self.cfg.train.min_snr_gamma:
            loss = loss * self._min_snr_weights(t)
        if self.cfg.train.debiased_estimation:
            loss = loss * losses.debiased_weights(self.alphas_cumprod, t, self.models.prediction)
        if "loss_weight" in batch:  # regularisation pictures: dataset.regularization.loss_weight (training/data.py)
            loss = loss * self._on_device(batch["loss_weight"]).to(loss.dtype)
        return loss.mean()

    def prediction_loss(self, batch: dict, noise: torch.Tensor, t: torch.Tensor, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The per-image squared error [B] of a cached batch noised with `noise` at timesteps `t`: the step's
        forward pass, as the validation loss measures it (fixed noise and timesteps so steps compare; plain
        MSE whatever `train.loss` is, so validation losses of runs with different losses compare too)."""
        pred, target = self._prediction(batch, noise, t, latents=latents)
        return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    def _prediction(self, batch: dict, noise: torch.Tensor, t: torch.Tensor, *, latents: torch.Tensor | None = None):
        """(the UNet's prediction, its target) for a cached batch noised with `noise` at timesteps `t`."""
        if latents is None:
            latents = self._on_device(batch["latents"])
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        if "prompt_embeds" in batch:
            embeds = self._on_device(batch["prompt_embeds"])
            pooled = batch.get("pooled")
            pooled = self._on_device(pooled) if pooled is not None else None
        else:
            embeds, pooled = self.encode_text(batch["captions"])
        extra = {}
        if self.models.kind == "sdxl":
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self._on_device(batch["time_ids"])}
        with self.accelerator.autocast():
            pred = self.unet(noisy.to(self.compute_dtype), t, embeds.to(self.compute_dtype), **extra).sample
        target = self.noise_scheduler.get_velocity(latents, noise, t) if self.models.prediction == "v" else noise
        return pred, target

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A cached batch tensor onto the GPU without stopping the host. A copy from ordinary (pageable) memory
        that is not non_blocking ends in cudaStreamSynchronize: the host would wait for the GPU every step
        instead of queueing the next one. From pinned memory, non_blocking, the copy is queued on the stream."""
        if self.device.type != "cuda" or tensor.is_cuda:
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _min_snr_weights(self, t: torch.Tensor) -> torch.Tensor:
        return losses.min_snr_weights(self.alphas_cumprod, t, self.cfg.train.min_snr_gamma, self.models.prediction)

    @property
    def lr(self) -> float:
        return optimizers.reported_lr(self.optimizer, self.lr_scheduler)
