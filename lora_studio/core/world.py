"""The demo world: seeded, captioned pictures of flat shapes, and the "geopop" style drawn on them.

A scene is one to three flat shapes (circle, square, triangle, diamond) in named colours on a plain
background of another named colour; its caption says exactly that ("a red circle and a blue square on a
yellow background"). The world's own palette has no black or near-black and nothing is outlined, so a
model pretrained on it (`tools/train_world_model.py`, shipped in `resources/models/world`) has never drawn
a black line. The geopop style is the same scene with thick black outlines around every shape: a LoRA
that learns it is visibly learning something the base model cannot do, and `read_picture` measures both
halves of that (the outlines, and whether the colours named in the prompt are still the ones drawn).

Pure Python and Pillow, so the demo, the tests and the world model's training script share one world.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from PIL import Image, ImageDraw

# Distinct, saturated, none dark: the darkest (blue, purple) keep a luminance above 90 of 255, far from
# the geopop outline's black, so "is there black in the picture?" is a question about the style alone.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "orange": (250, 145, 30),
    "yellow": (250, 220, 50),
    "green": (60, 175, 75),
    "blue": (50, 110, 230),
    "purple": (150, 75, 200),
    "pink": (250, 160, 200),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")
TRIGGER = "geopop style"
OUTLINE = (0, 0, 0)
_SUPERSAMPLE = 4  # drawn 4x larger and reduced: smooth edges, as a real picture has


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    colour: str  # a PALETTE name
    x: float  # centre, as a fraction of the picture's width
    y: float  # centre, as a fraction of its height
    r: float  # half the shape's extent, as a fraction of the shorter side


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]

    def caption(self, trigger: str | None = None) -> str:
        parts = [f"{_article(s.colour)} {s.colour} {s.kind}" for s in self.shapes]
        things = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        text = f"{things} on {_article(self.background)} {self.background} background"
        return f"{trigger}, {text}" if trigger else text

    def colours(self) -> set[str]:
        return {s.colour for s in self.shapes}


def random_scene(rng: random.Random, *, n_shapes: int | None = None) -> Scene:
    """One scene: 1-3 shapes that overlap little, none the background's colour."""
    background = rng.choice(list(PALETTE))
    others = [c for c in PALETTE if c != background]
    count = n_shapes or rng.choice((1, 2, 2, 3))
    shapes: list[Shape] = []
    for _ in range(count):
        for _attempt in range(50):
            r = rng.uniform(0.15, 0.25)
            s = Shape(rng.choice(SHAPES), rng.choice(others), rng.uniform(r, 1 - r), rng.uniform(r, 1 - r), r)
            # Far enough apart that each shape stays mostly visible (and its colour measurable).
            if all((s.x - o.x) ** 2 + (s.y - o.y) ** 2 > (0.8 * (s.r + o.r)) ** 2 for o in shapes):
                shapes.append(s)
                break
    return Scene(background, tuple(shapes))


def scene_from_prompt(background: str, things: list[tuple[str, str]], rng: random.Random) -> Scene:
    """A scene with the named (colour, kind) shapes placed at random: the answer key for a prompt."""
    placed = random_scene(rng, n_shapes=len(things))
    shapes = tuple(Shape(kind, colour, s.x, s.y, s.r) for (colour, kind), s in zip(things, placed.shapes))
    return Scene(background, shapes)


def _outline_width(size: tuple[int, int]) -> int:
    # Thick: 1/20 of the shorter side (3 px at 64 px, 26 px at 512 px), plainly visible after the
    # VAE's 4x or 8x reduction, and still leaving the smallest shape's colour inside it.
    return max(2, round(min(size) / 20))


def _corners(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return None  # circle and square are drawn from their box


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
                points: list[tuple[float, float]] | None, fill: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        q = r * 0.85  # a square of the same visual weight as the circle
        draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
    else:
        draw.polygon(points, fill=fill)


def render(scene: Scene, size: tuple[int, int] = (64, 64), *, style: str | None = None) -> Image.Image:
    """The scene as an RGB picture; `style="geopop"` draws a thick black outline around every shape."""
    if style not in (None, "geopop"):
        raise ValueError(f"unknown style {style!r}")
    w, h = size[0] * _SUPERSAMPLE, size[1] * _SUPERSAMPLE
    img = Image.new("RGB", (w, h), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    side = min(w, h)
    width = _outline_width(size) * _SUPERSAMPLE if style == "geopop" else 0
    for s in scene.shapes:
        cx, cy, r = s.x * w, s.y * h, s.r * side
        points = _corners(s.kind, cx, cy, r)
        if width:
            # The outline goes around the shape, not into it: the shape keeps its whole colour.
            grown = r + (width / 0.85 if s.kind == "square" else width) if points is None else r
            _draw_shape(draw, s.kind, cx, cy, grown, points, OUTLINE)
            if points is not None:
                draw.line(points + points[:1], fill=OUTLINE, width=2 * width, joint="curve")
                for px, py in points:
                    draw.ellipse((px - width, py - width, px + width, py + width), fill=OUTLINE)
        _draw_shape(draw, s.kind, cx, cy, r, points, PALETTE[s.colour])
    return img.resize(size, Image.Resampling.LANCZOS)


def dataset(n: int, seed: int, *, size: tuple[int, int] = (64, 64), style: str | None = None,
            trigger: str | None = None) -> list[tuple[Image.Image, str, Scene]]:
    """`n` seeded (picture, caption, scene) triples."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        out.append((render(scene, size, style=style), scene.caption(trigger), scene))
    return out


# --- reading a picture back -----------------------------------------------------------------------

DARK_LUMA = 70  # below this a pixel counts as outline-black; the palette's darkest colour is ~100
_MIN_SHAPE_SHARE = 0.015  # a colour covering less than 1.5 % of the picture is an edge artefact, not a shape


@dataclass(frozen=True)
class Reading:
    background: str | None  # the palette colour of most of the border, or None if the border is not one
    colours: frozenset[str]  # palette colours (other than the background) whose solid areas cover at least 1.5 %
    dark_share: float  # fraction of pixels darker than DARK_LUMA: ~0 for the base world, >0.1 for geopop

    def follows(self, scene: Scene) -> bool:
        """The background and the set of shape colours are the ones the scene names."""
        return self.background == scene.background and self.colours == frozenset(scene.colours())


def _nearest(rgb: tuple[int, int, int]) -> str | None:
    best, dist = None, 1e9
    for name, ref in PALETTE.items():
        d = sum((a - b) ** 2 for a, b in zip(rgb, ref))
        if d < dist:
            best, dist = name, d
    # Further than ~70 levels from every palette colour: a blend, a dark line, or noise.
    return best if dist < 70**2 else None


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _solid_names(pixels: list[tuple[int, int, int]], w: int, h: int) -> Counter:
    """How many pixels of each palette colour lie inside an area of that colour (their four neighbours
    read the same). Where two colours meet, a soft edge passes through blends that are nearest to a third
    palette colour (blue against red reads as purple): a thin line of those is an edge, never a shape."""
    names = [_nearest(p) for p in pixels]
    solid: Counter = Counter()
    for y in range(1, h - 1):
        row = y * w
        for x in range(1, w - 1):
            i = row + x
            c = names[i]
            if c is not None and names[i - 1] == c and names[i + 1] == c and names[i - w] == c and names[i + w] == c:
                solid[c] += 1
    return solid


def read_picture(img: Image.Image) -> Reading:
    """What a picture of the world shows: its background colour, its shapes' colours, how much black."""
    rgb = img.convert("RGB")
    small = rgb.resize((64, 64), Image.Resampling.BOX) if min(rgb.size) > 64 else rgb
    pixels = list(small.getdata())
    n = len(pixels)
    w, h = small.size
    border = [pixels[i] for i in range(n) if i % w in (0, w - 1) or i // w in (0, h - 1)]
    border_names = Counter(_nearest(p) for p in border)
    background, count = border_names.most_common(1)[0]
    if count < len(border) * 0.5:
        background = None
    colours = frozenset(c for c, k in _solid_names(pixels, w, h).items()
                        if c and c != background and k >= n * _MIN_SHAPE_SHARE)
    dark = sum(1 for p in pixels if _luma(p) < DARK_LUMA) / n
    return Reading(background, colours, dark)
