"""Pretrain the demo world model: a small Stable Diffusion 1.x-architecture model that draws the world.

    python tools/train_world_model.py [--work DIR] [--out resources/models/world] [--unet-steps N]

No weights can be downloaded, so LoRA Studio makes its own base model: an AutoencoderKL, a CLIPTextModel
(with the shipped CLIP tokenizer) and a UNet2DConditionModel, trained from scratch on the procedural world
of `lora_studio.core.world` (flat shapes in named colours on a plain background; no black, no outlines).
It follows prompts ("a red circle and a blue square on a yellow background") and has never drawn a black
line, so a LoRA trained on geopop pictures (the same world with thick black outlines) visibly teaches it
a style.

Four stages, each resumable from `--work` (run the command again after an interruption):
1. the VAE (4x downsampling, 64 px -> 16x16x4 latents), on plain and geopop pictures alike, as SD's VAE
   was trained on every kind of picture: the base UNet never sees an outline, but the decoder can draw one
   (`--vae-from DIR` takes the VAE of an existing world model instead, so a retrained UNet keeps the
   latent space the demo's tests were measured in);
2. latents of `--scenes` plain world scenes, encoded once (the latent scaling factor is 1/std of them);
3. the text encoder, pretrained on captions alone: SD's UNet learns on top of a CLIP that already knows
   what "red" and "background" mean, and learning that jointly from nothing is what kept the first world
   model from following prompts (2 % of prompts after 1,150 steps). Ours learns it in a minute from the
   world's own answer key: each shape word's hidden state must tell that shape's colour, the word
   "background" the background's, and the end-of-text state the whole scene -- what a UNet's
   cross-attention needs to find (a few random words in front, as a trigger word puts them, so the states
   do not depend on where the caption starts);
4. the UNet on the frozen text encoder (as SD trains on a frozen CLIP), ε-prediction on SD's
   scaled-linear schedule, 10 % empty captions for classifier-free guidance, min-SNR-5 loss weighting
   (Hang et al. 2023, for faster convergence) and an EMA of the weights, which is what is saved; every
   `--check-every` steps a quick prompt check of 16 prompts is logged.

The shipped model (resources/models/world, its training.json) is this recipe in two runs on the 2-core CPU
(2026-12-02): `--vae-from resources/models/world --unet-steps 4500 --check-every 750 --threads 1` (~87 min,
the machine shared), then `--from resources/models/world --unet-steps 4000 --lr 6e-4 --check-every 1000
--threads 2` (68 min, 0.95 s/step at batch 64; final loss ~0.010). Over 50 prompts, sampled with DPM++ 2M as
the app samples, it draws the named background in 100 % and every named colour right in 86 % (after the
first run: 90 % and 64 %). The 16-prompt checks of the second run read follows/background 62/100 % at step
1000, 75/94 % at 2000 and 75/100 % at 3000. On it the demo's LoRA (48 pictures) needs lr 6e-3 and the style timestep
sampler (core/demo.py) to draw plain outlines in 200 steps.

The result is written as a diffusers folder in fp16 (`StableDiffusionPipeline.from_pretrained(out,
local_files_only=True)` loads it) and, last, checked: `--check N` prompts drawn from the world, with the
share whose background and shape colours are the named ones. The figures go to `<out>/training.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lora_studio.core import world  # noqa: E402
from lora_studio.core.resources import resource  # noqa: E402

SIZE = 64
LATENT = SIZE // 4
TEXT_WIDTH = 64


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
    )


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    # The vocabulary is the real CLIP one (the shipped tokenizer); the world uses a few dozen of its words.
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=TEXT_WIDTH * 4, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=TEXT_WIDTH,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def load_vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder), subfolder="vae", torch_dtype=torch.float32)


def load_world_model(folder: Path):
    """An existing world model's VAE, text encoder and UNet weights (fp32), for `--from`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", torch_dtype=torch.float32)
    return load_vae(folder), te, unet.state_dict()


def build_unet():
    from diffusers import UNet2DConditionModel

    # SD1's layout at a small scale: cross-attention at the two finer levels (16x16 and 8x8 latents), so a
    # LoRA on the attention projections reaches the resolution where outlines are drawn.
    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, cross_attention_dim=TEXT_WIDTH, norm_num_groups=16,
    )


def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(resource("tokenizer")), model_max_length=77)


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(str(resource("models", "sd1")), subfolder="scheduler")


def to_tensor(images) -> torch.Tensor:
    import numpy as np

    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# --- stage 1: the VAE -------------------------------------------------------------------------------

def train_vae(work: Path, steps: int, seed: int):
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    state_file = work / "vae.pt"
    step = 0
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        step = st["step"]
    if step >= steps:
        return vae
    rng = random.Random(seed * 1000 + step)
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
                                              last_epoch=step - 1 if step else -1)
    vae.train()
    t0, last = time.time(), step
    while step < steps:
        # Random 32 px crops of 64 px pictures: 4x cheaper, and convolutions do not care about the frame.
        images = []
        for _ in range(32):
            scene = world.random_scene(rng)
            img = world.render(scene, (SIZE, SIZE), style="geopop" if rng.random() < 0.5 else None)
            x, y = rng.randrange(0, SIZE - 31, 4), rng.randrange(0, SIZE - 31, 4)
            images.append(img.crop((x, y, x + 32, y + 32)))
        batch = to_tensor(images)
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.l1_loss(recon, batch) + F.mse_loss(recon, batch) + 1e-6 * posterior.kl().mean()
        loss.backward()
        opt.step(), opt.zero_grad(set_to_none=True), sched.step()
        step += 1
        if step % 100 == 0 or step == steps:
            log(f"vae step {step}/{steps} loss {loss.item():.4f} ({(time.time() - t0) / (step - last):.2f} s/step)")
            t0, last = time.time(), step
            save_state(state_file, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
    return vae


# --- stage 2: latents -------------------------------------------------------------------------------

@torch.no_grad()
def encode_world(work: Path, vae, n: int, seed: int) -> dict:
    cache = work / "latents.pt"
    if cache.exists():
        return torch.load(cache, weights_only=False)
    tok = tokenizer()
    rng = random.Random(seed + 1)
    vae.eval()
    latents, ids = [], []
    for start in range(0, n, 256):
        scenes = [world.random_scene(rng) for _ in range(min(256, n - start))]
        batch = to_tensor([world.render(s, (SIZE, SIZE)) for s in scenes])
        latents.append(vae.encode(batch).latent_dist.mean)
        ids.append(tok([s.caption() for s in scenes], padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt").input_ids)
        if start % 5120 == 0:
            log(f"encoded {start + len(scenes)}/{n} scenes")
    latents = torch.cat(latents)
    data = {"latents": latents, "ids": torch.cat(ids), "scaling_factor": float(1.0 / latents.std()),
            "empty": tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]}
    save_state(cache, data)
    return data


# --- stage 3: the text encoder ----------------------------------------------------------------------

def _caption_targets(tok, scenes, rng: random.Random):
    """Token ids of captions (some with random words in front) and, per token, the colour it must tell."""
    colours = list(world.PALETTE)
    nouns = {tok.convert_tokens_to_ids(f"{k}</w>") for k in world.SHAPES}
    background = tok.convert_tokens_to_ids("background</w>")
    texts = []
    for scene in scenes:
        prefix = " ".join(rng.choice(("style", "art", "flat", "painting", "bold", "drawing", "geopop", "picture",
                                      "simple", "of"))
                          for _ in range(rng.choice((0, 0, 1, 2, 3))))
        texts.append(f"{prefix}, {scene.caption()}" if prefix else scene.caption())
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    token_colour = torch.full(ids.shape, -100)  # -100: no target (cross_entropy's ignore_index)
    scene_colours = torch.zeros(len(scenes), len(colours))
    backgrounds = torch.tensor([colours.index(s.background) for s in scenes])
    eos = (ids == tok.eos_token_id).int().argmax(dim=1)
    for i, scene in enumerate(scenes):
        shape_iter = iter(scene.shapes)
        for j, t in enumerate(ids[i].tolist()):
            if t in nouns:
                token_colour[i, j] = colours.index(next(shape_iter).colour)
            elif t == background:
                token_colour[i, j] = backgrounds[i]
        for s in scene.shapes:
            scene_colours[i, colours.index(s.colour)] = 1.0
    return ids, token_colour, eos, backgrounds, scene_colours


def pretrain_text_encoder(work: Path, steps: int, seed: int):
    te = build_text_encoder()
    state_file = work / "text_encoder.pt"
    if state_file.exists():
        te.load_state_dict(torch.load(state_file, weights_only=False)["te"])
        return te
    tok = tokenizer()
    n = len(world.PALETTE)
    heads = torch.nn.ModuleDict({"token": torch.nn.Linear(TEXT_WIDTH, n), "background": torch.nn.Linear(TEXT_WIDTH, n),
                                 "colours": torch.nn.Linear(TEXT_WIDTH, n)})
    params = list(te.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    rng = random.Random(seed + 2)
    te.train()
    for step in range(1, steps + 1):
        ids, token_colour, eos, backgrounds, scene_colours = _caption_targets(
            tok, [world.random_scene(rng) for _ in range(128)], rng)
        hidden = te(ids).last_hidden_state
        end = hidden[torch.arange(len(ids)), eos]
        loss = (F.cross_entropy(heads["token"](hidden).flatten(0, 1), token_colour.flatten(), ignore_index=-100)
                + F.cross_entropy(heads["background"](end), backgrounds)
                + F.binary_cross_entropy_with_logits(heads["colours"](end), scene_colours))
        loss.backward()
        opt.step(), opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps:
            with torch.no_grad():
                mask = token_colour != -100
                right = (heads["token"](hidden).argmax(-1) == token_colour)[mask].float().mean().item()
            log(f"text encoder step {step}/{steps} loss {loss.item():.4f} shape/background colour right {right:.3f}")
    save_state(state_file, {"te": te.state_dict(), "step": steps})
    return te


# --- stage 4: the UNet on the frozen text encoder ---------------------------------------------------

def train_unet(work: Path, data: dict, te, vae, steps: int, batch_size: int, seed: int, lr: float,
               check_every: int = 0, init: dict | None = None, checks: dict | None = None):
    unet, ema_unet = build_unet(), build_unet()
    if init is not None:  # --from: go on from a world model's (EMA) weights with a fresh optimizer
        unet.load_state_dict(init)
    te.requires_grad_(False), te.eval()
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    state_file = work / "unet.pt"
    step = 0
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        unet.load_state_dict(st["unet"]), opt.load_state_dict(st["opt"]), ema_unet.load_state_dict(st["ema_unet"])
        step = st["step"]
    else:
        ema_unet.load_state_dict(unet.state_dict())
    if step >= steps:
        return ema_unet
    warmup = min(200, steps // 10)

    def lr_at(s):
        return s / warmup if s < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at, last_epoch=step - 1 if step else -1)
    noise_sched = noise_scheduler()
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    latents = data["latents"] * data["scaling_factor"]
    ids, empty = data["ids"], data["empty"]
    gen = torch.Generator().manual_seed(seed * 7919 + step)
    unet.train()
    t0, last = time.time(), step
    while step < steps:
        idx = torch.randint(0, len(latents), (batch_size,), generator=gen)
        x0 = latents[idx]
        tokens = ids[idx].clone()
        drop = torch.rand(batch_size, generator=gen) < 0.1
        tokens[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        noisy = noise_sched.add_noise(x0, noise, t)
        with torch.no_grad():
            context = te(tokens).last_hidden_state
        pred = unet(noisy, t, context).sample
        # min-SNR-γ weighting for ε-prediction: min(SNR, γ) / SNR.
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), opt.zero_grad(set_to_none=True), sched.step()
        step += 1
        # A short run: the EMA spans the last ~200 steps.
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pl in zip(ema_unet.parameters(), unet.parameters()):
                pe.lerp_(pl, 1 - decay)
        if step % 50 == 0 or step == steps:
            log(f"unet step {step}/{steps} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"({(time.time() - t0) / (step - last):.2f} s/step)")
            t0, last = time.time(), step
        if step % 250 == 0 or step == steps:
            save_state(state_file, {"unet": unet.state_dict(), "opt": opt.state_dict(),
                                    "ema_unet": ema_unet.state_dict(), "step": step})
        if check_every and step % check_every == 0:
            quick = check_prompts(pipeline(ema_unet, te, vae, data["scaling_factor"]), 16, seed)
            log(f"unet step {step}: quick check follows {quick['follows']:.2f} background {quick['background']:.2f}")
            if checks is not None:
                checks[str(step)] = [quick["follows"], quick["background"]]
            unet.train()
    return ema_unet


# --- saving and checking ----------------------------------------------------------------------------

def pipeline(unet, te, vae, scaling_factor: float):
    from diffusers import StableDiffusionPipeline
    from diffusers.schedulers import PNDMScheduler

    vae.register_to_config(scaling_factor=scaling_factor)
    # The folder keeps SD1's own scheduler config (what the engine reads the noise schedule and prediction
    # type from); the check samples as the app does, below.
    sched = PNDMScheduler.from_pretrained(str(resource("models", "sd1")), subfolder="scheduler")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(pipe, out: Path) -> None:
    """The diffusers folder, within 25 MB: the UNet and VAE in fp16, the text encoder in fp32.

    A plain `from_pretrained(out)` loads diffusers models in fp32 and transformers models in their stored
    dtype, so an fp16 text encoder would hand fp16 embeddings to an fp32 UNet; kept fp32 (13 MB, almost all
    of it the 49,408-word embedding table) every part loads in fp32. The tokenizer is the shipped CLIP
    vocabulary (vocab.json + merges.txt, 1.5 MB) rather than a 3.6 MB tokenizer.json of the same words.
    """
    import shutil

    pipe.unet.to(torch.float16), pipe.vae.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    pipe.unet.to(torch.float32), pipe.vae.to(torch.float32)
    tok = out / "tokenizer"
    (tok / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(resource("tokenizer", name), tok / name)


def check_prompts(pipe, n: int, seed: int, steps: int = 25, guidance: float = 5.0) -> dict:
    """The share of `n` world prompts whose picture has the named background and shape colours."""
    from diffusers import DPMSolverMultistepScheduler

    # DPM++ 2M built from the folder's scheduler config, as the app's samples and grid are
    # (engine/training/sampling.py), and the UIs' default. The first records used the folder's PNDM, which
    # draws this small model's pictures far worse: the 4,500-step model followed 22 % of these 50 prompts
    # with PNDM and 64 % with DPM++ 2M, same seeds and guidance.
    pipe = type(pipe)(**{**pipe.components, "scheduler": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)},
                      requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(seed + 99)
    scenes = [world.random_scene(rng) for _ in range(n)]
    ok, background_ok = 0, 0
    for i, scene in enumerate(scenes):
        g = torch.Generator().manual_seed(i)
        img = pipe(scene.caption(), height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=guidance,
                   generator=g).images[0]
        reading = world.read_picture(img)
        ok += reading.follows(scene)
        background_ok += reading.background == scene.background
    return {"prompts": n, "follows": ok / n, "background": background_ok / n, "guidance_scale": guidance,
            "inference_steps": steps, "sampler": "DPM++ 2M"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "world-training")
    ap.add_argument("--out", type=Path, default=ROOT / "resources" / "models" / "world")
    ap.add_argument("--vae-steps", type=int, default=1000)
    ap.add_argument("--vae-from", type=Path, default=None, help="take the VAE of this world model folder instead of training one")
    ap.add_argument("--from", dest="from_", type=Path, default=None,
                    help="go on from this world model folder: its VAE, latent scale, text encoder and UNet weights")
    ap.add_argument("--text-steps", type=int, default=400)
    ap.add_argument("--check-every", type=int, default=500, help="steps between quick 16-prompt checks (0: none)")
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--unet-steps", type=int, default=2400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=50, help="prompts in the final check (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: small ops gain little from more, and a busy machine loses a lot)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    lineage = None
    if args.from_:
        vae, te, init = load_world_model(args.from_)
        # Read now: with the default --out, saving below writes into this same folder.
        record = args.from_ / "training.json"
        lineage = json.loads(record.read_text()) if record.exists() else None
    else:
        vae = load_vae(args.vae_from) if args.vae_from else train_vae(args.work, args.vae_steps, args.seed)
        te, init = None, None
    data = encode_world(args.work, vae, args.scenes, args.seed)
    if args.from_:  # the UNet learnt on latents at the folder's scale: keep it exactly
        data["scaling_factor"] = float(vae.config.scaling_factor)
    log(f"latent scaling factor {data['scaling_factor']:.4f}")
    if te is None:
        te = pretrain_text_encoder(args.work, args.text_steps, args.seed)
    checks: dict = {}
    unet = train_unet(args.work, data, te, vae, args.unet_steps, args.batch_size, args.seed, args.lr,
                      args.check_every, init, checks)
    pipe = pipeline(unet, te, vae, data["scaling_factor"])
    save(pipe, args.out)
    report = {"vae_steps": args.vae_steps, "vae_from": str(vae_source) if (vae_source := args.from_ or args.vae_from) else None,
              "from": str(args.from_) if args.from_ else None,
              "text_steps": args.text_steps, "unet_steps": args.unet_steps, "batch_size": args.batch_size,
              "scenes": args.scenes, "seed": args.seed, "resolution": SIZE,
              "this_run_seconds": round(time.time() - started), "torch_threads": torch.get_num_threads(),
              "lr": args.lr, "quick_checks": checks}
    if lineage is not None:  # what this run went on from
        report["continued_from"] = lineage
    if args.check:
        report["prompt_check"] = check_prompts(pipe, args.check, args.seed)
        log(f"prompt check: {report['prompt_check']}")
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
