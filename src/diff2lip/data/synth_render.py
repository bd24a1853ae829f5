"""Rendering of the synthetic talking faces (DESIGN.md §7, issue 4): identities, motion, mouths, pixels.

A clip's *look* (face shape, skin, hair, eyes, brows, nose, glasses, beard, clothes, background, lighting,
noise, blur) and its slow head motion are drawn from the clip's own random generator only, independent of
the audio; only the mouth changes with the speech, from per-frame ``[openness, width, roundness]``
(:mod:`diff2lip.data.synth_mouth`).

How a frame is made (all vectorised numpy/PIL, no per-pixel Python):

1. Once per clip, at ``SUPERSAMPLE``× (2×), the head is painted into an RGBA *sprite* in face-local
   coordinates (origin at the face centre; ``a`` = half face width, ``b`` = half face height) with
   analytically anti-aliased edges, multiplied by a lighting field (a linear gradient from the light
   direction plus a radial fall-off) and box-reduced to frame resolution; the background is made at
   frame resolution. Both get the clip's blur.
2. Per frame, the mouth is painted at 2× into a small patch of the unshaded sprite (lips, dark interior,
   upper and lower teeth), shaded with the same lighting field, reduced, blurred and written into a copy
   of the sprite.
3. The sprite is placed with an affine map (head position, scale, small rotation, all slow sinusoids;
   bilinear), pasted over the background, and given noise (a few Gaussian fields drawn per clip,
   re-used at random offsets).

The face box of each frame (``x1, y1, x2, y2``; eyebrows/forehead to a little below the chin, ear to ear,
axis-aligned like a detector box with Wav2Lip's chin pad) is known exactly from the affine map; the
mouth always lies in the lower half of that box. :func:`mouth_openness` measures the opening back from
rendered pixels: the dark mouth interior is a saturated, very dark red that nothing else on the face is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "SUPERSAMPLE",
    "FaceRenderer",
    "Identity",
    "Motion",
    "draw_identity",
    "draw_motion",
    "mouth_openness",
]

SUPERSAMPLE = 2

# Face-local geometry, in units of the half face height b (vertical) or half face width a (horizontal).
BOX_TOP = -0.62  # face box top (eyebrows/forehead), × b
BOX_BOTTOM = 1.10  # face box bottom (chin + pad), × b
BOX_HALF_WIDTH = 1.02  # face box half width (ear to ear), × a
MOUTH_Y = 0.56  # mouth centre, × b (lower half of the box)
MAX_OPEN = 0.40  # full mouth opening (interior height), × a

INTERIOR_RGB = (52.0, 7.0, 12.0)  # dark mouth interior
TEETH_RGB = (236.0, 232.0, 218.0)
UPPER_TEETH = 0.30  # fraction of the opening covered by the upper teeth
LOWER_TEETH = 0.10  # ... and by the lower teeth (the dark gap is the remaining 60 %)

SKIN_TONES = np.array(
    [
        (255, 224, 196), (241, 194, 167), (234, 192, 134), (224, 172, 105), (198, 134, 66),
        (176, 120, 86), (141, 85, 54), (120, 75, 50), (96, 62, 44), (78, 52, 38),
    ],
    dtype=np.float32,
)  # fmt: skip
HAIR_COLOURS = np.array(
    [
        (20, 18, 18), (45, 32, 25), (75, 50, 32), (110, 75, 45), (160, 120, 70),
        (215, 185, 120), (150, 70, 35), (160, 160, 160), (225, 225, 220), (90, 60, 100),
    ],
    dtype=np.float32,
)  # fmt: skip
IRIS_COLOURS = np.array(
    [(70, 45, 25), (100, 70, 40), (60, 110, 160), (80, 120, 80), (110, 120, 130)], np.float32
)
HAIR_STYLES = ("bald", "short", "long", "volume", "side")


@dataclass
class Identity:
    """Everything about a clip's look except the mouth motion (drawn by :func:`draw_identity`)."""

    size: int
    face_half_width: float  # a, fraction of the frame side (at 1×)
    aspect: float  # b / a
    jaw: float  # chin narrowing in [0, 0.35]
    centre: tuple[float, float]  # face centre (x, y), fractions of the frame side
    skin: np.ndarray  # (3,) RGB
    lips: np.ndarray
    hair: np.ndarray
    hair_style: str
    hairline: float
    iris: np.ndarray
    eye_spacing: float
    eye_size: float
    eye_y: float
    brow_thickness: float
    brow_tilt: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    glasses: bool
    glasses_rgb: np.ndarray
    glasses_round: bool
    beard: float  # 0 none, else beard opacity
    shirt: np.ndarray
    background: str
    bg_colours: np.ndarray  # (3, 3) RGB
    bg_angle: float
    light_angle: float
    light_strength: float
    ambient: float
    blur: float
    noise: float
    texture_seed: int


def draw_identity(rng: np.random.Generator, size: int) -> Identity:
    """A random look for a clip of ``size × size`` frames (uses only ``rng``: no audio involved)."""
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3)
    skin = np.clip(skin, 30, 255).astype(np.float32)
    # lips: a darker, redder version of the skin; kept well brighter than the mouth interior
    lip_tint = np.array([0.86, 0.62, 0.66], np.float32) * rng.uniform(0.92, 1.05)
    lips = np.maximum(skin * lip_tint, np.array([95, 58, 56], np.float32))
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.9, 1.1)
    bg = rng.uniform(20, 235, (3, 3)).astype(np.float32)
    return Identity(
        size=size,
        face_half_width=float(rng.uniform(0.24, 0.30)),
        aspect=float(rng.uniform(1.18, 1.38)),
        jaw=float(rng.uniform(0.0, 0.35)),
        centre=(float(rng.uniform(0.45, 0.55)), float(rng.uniform(0.44, 0.49))),
        skin=skin,
        lips=lips.astype(np.float32),
        hair=np.clip(hair, 0, 255).astype(np.float32),
        hair_style=str(HAIR_STYLES[rng.integers(len(HAIR_STYLES))]),
        hairline=float(rng.uniform(0.40, 0.62)),
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        eye_spacing=float(rng.uniform(0.34, 0.44)),
        eye_size=float(rng.uniform(0.85, 1.15)),
        eye_y=float(rng.uniform(-0.22, -0.12)),
        brow_thickness=float(rng.uniform(0.035, 0.07)),
        brow_tilt=float(rng.uniform(-0.08, 0.08)),
        nose_length=float(rng.uniform(0.85, 1.15)),
        nose_width=float(rng.uniform(0.85, 1.2)),
        mouth_width=float(rng.uniform(0.92, 1.08)),
        lip_thickness=float(rng.uniform(0.8, 1.25)),
        glasses=bool(rng.random() < 0.3),
        glasses_rgb=rng.uniform(10, 200, 3).astype(np.float32),
        glasses_round=bool(rng.random() < 0.5),
        beard=float(rng.uniform(0.35, 0.9)) if rng.random() < 0.25 else 0.0,
        shirt=rng.uniform(20, 235, 3).astype(np.float32),
        background=str(rng.choice(["flat", "gradient", "texture", "stripes"])),
        bg_colours=bg,
        bg_angle=float(rng.uniform(0, 2 * math.pi)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.22)),
        ambient=float(rng.uniform(0.85, 1.08)),
        blur=float(rng.uniform(0.0, 0.7)),
        noise=float(rng.uniform(0.0, 3.5)),
        texture_seed=int(rng.integers(2**31)),
    )


@dataclass
class Motion:
    """Per-frame head pose: offsets ``dx, dy`` (fractions of the frame side), ``angle`` (radians), ``scale``."""

    dx: np.ndarray
    dy: np.ndarray
    angle: np.ndarray
    scale: np.ndarray


def _slow_wave(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random signal: two sinusoids of 0.05–0.4 Hz with random phases, peak ≤ ``amplitude``."""
    f = rng.uniform(0.05, 0.4, 2)
    ph = rng.uniform(0, 2 * math.pi, 2)
    w = rng.uniform(0.3, 0.7)
    amp = amplitude * rng.uniform(0.2, 1.0)
    return amp * (
        w * np.sin(2 * math.pi * f[0] * t + ph[0]) + (1 - w) * np.sin(2 * math.pi * f[1] * t + ph[1])
    )


def draw_motion(rng: np.random.Generator, num_frames: int, fps: float = 25.0) -> Motion:
    """Slow head motion (translation ≤ 3 % of the frame, rotation ≤ 5°, scale ± 3 %), from ``rng`` only."""
    t = np.arange(num_frames) / fps
    return Motion(
        dx=_slow_wave(rng, t, 0.03),
        dy=_slow_wave(rng, t, 0.02),
        angle=_slow_wave(rng, t, math.radians(5.0)),
        scale=1.0 + _slow_wave(rng, t, 0.03),
    )


# ------------------------------------------------------------------------------------------ painting


def _soft(d: np.ndarray) -> np.ndarray:
    """Coverage from a signed distance in pixels (positive inside): a one-pixel anti-aliased edge."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Coverage of an axis-aligned ellipse (approximate signed distance ``(1 − f) · min(rx, ry)``)."""
    f = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _soft((1.0 - f) * min(rx, ry))


def _paint(img: np.ndarray, cover: np.ndarray, rgb: np.ndarray | tuple[float, ...]) -> None:
    """In place: ``img ← img + cover · (rgb − img)`` over ``(H, W, C)`` float ``img``."""
    img += cover[..., None] * (np.asarray(rgb, np.float32) - img)


def _reduce(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter ``(H, W, 4)`` float RGBA (alpha in 0..255) by ``factor``, averaging premultiplied colour."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    alpha = img[..., 3:4] / 255.0
    pre = np.concatenate([img[..., :3] * alpha, alpha], axis=-1)  # (H, W, 4) premultiplied
    pre = pre.reshape(h, factor, w, factor, 4).mean(axis=(1, 3))  # (h, w, 4)
    a = pre[..., 3:4]
    rgb = np.where(a > 1e-6, pre[..., :3] / np.maximum(a, 1e-6), 0.0)
    return np.concatenate([rgb, a * 255.0], axis=-1).astype(np.float32)


class FaceRenderer:
    """Renders one identity's frames for given mouth parameters and head motion.

    Painting happens at ``SUPERSAMPLE``× (in "fine" pixels); the sprite and each mouth patch are then
    box-reduced to frame resolution, where the per-frame affine placement happens.

    Args:
        identity: the look (:func:`draw_identity`).
    """

    def __init__(self, identity: Identity):
        self.id = identity
        ss = SUPERSAMPLE
        self.a = identity.face_half_width * identity.size * ss  # half face width, fine pixels
        self.b = self.a * identity.aspect
        self.half = math.ceil(0.75 * identity.size)  # sprite half side, frame pixels
        hs = self.half * ss
        ys, xs = np.mgrid[-hs:hs, -hs:hs].astype(np.float32) + 0.5  # face-local fine-pixel centres
        self._x, self._y = xs, ys
        rgba = self._paint_head(xs, ys)  # (2hs, 2hs, 4) float, unshaded, alpha 0..255
        self.light = self._lighting(xs, ys)  # (2hs, 2hs)
        self._unshaded = rgba
        shaded = rgba.copy()
        shaded[..., :3] *= self.light[..., None]
        self._sprite = np.clip(np.rint(_reduce(shaded, ss)), 0, 255).astype(np.uint8)  # (2h, 2h, 4)
        # the mouth patch (frame pixels, relative to the sprite): room for the widest, most open mouth
        # (lips reach 0.5 a sideways, 0.31 a above and 0.39 a below the mouth centre)
        my = self.half + MOUTH_Y * self.b / ss
        a1 = self.a / ss
        self._patch = (
            int(my - 0.34 * a1),
            math.ceil(my + 0.42 * a1),
            int(self.half - 0.52 * a1),
            math.ceil(self.half + 0.52 * a1),
        )
        self._blur = ImageFilter.GaussianBlur(identity.blur) if identity.blur > 0.05 else None
        self._blurred = self._sprite
        if self._blur is not None:
            img = Image.fromarray(self._sprite, "RGBA").filter(self._blur)
            self._blurred = np.asarray(img).copy()
        self.background = self._paint_background()  # PIL RGB, frame size
        if self._blur is not None:
            self.background = self.background.filter(self._blur)

    def _region(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice]:
        """Slices of the fine grid covering the face-local box ``cx ± rx, cy ± ry`` (plus a margin)."""
        hs, n = self.half * SUPERSAMPLE, self._x.shape[0]
        x0, x1 = int(cx - rx + hs) - 2, math.ceil(cx + rx + hs) + 2
        y0, y1 = int(cy - ry + hs) - 2, math.ceil(cy + ry + hs) + 2
        return slice(max(y0, 0), min(y1, n)), slice(max(x0, 0), min(x1, n))

    # -- identity layers (once per clip)

    def _paint_head(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ident, a, b = self.id, self.a, self.b
        img = np.zeros((*x.shape, 4), np.float32)  # RGB + coverage
        rgb, alpha = img[..., :3], img[..., 3]
        big = float(x.shape[0])  # "to the sprite's edge"

        def layer(box: tuple[float, float, float, float], cover_fn, colour, opaque: bool = True) -> None:
            """Paint ``cover_fn(xs, ys)`` in the colour inside the region ``box`` (cx, cy, rx, ry)."""
            sl = self._region(*box)
            cover = cover_fn(x[sl], y[sl])
            _paint(rgb[sl], cover, colour)
            if opaque:
                np.maximum(alpha[sl], cover, out=alpha[sl])

        skin, hair, style = ident.skin, ident.hair, ident.hair_style
        if style == "long":
            layer(
                (0, 0.15 * b, 1.28 * a, 1.3 * b),
                lambda xs, ys: _ellipse(xs, ys, 0, 0.15 * b, 1.28 * a, 1.3 * b) * (ys < 1.35 * b),
                hair * 0.85,
            )
        elif style == "volume":
            layer(
                (0, -0.45 * b, 1.45 * a, 1.0 * b),
                lambda xs, ys: _ellipse(xs, ys, 0, -0.45 * b, 1.45 * a, 1.0 * b),
                hair * 0.9,
            )
        # shoulders and shirt, neck
        sy = b + 0.95 * a

        def shoulders(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            body = np.maximum(_ellipse(xs, ys, 0, sy, 2.1 * a, 0.85 * a), _soft(ys - sy))
            return body * _soft(2.1 * a - np.abs(xs))

        layer((0, sy - 0.85 * a + big, 2.1 * a, big), shoulders, ident.shirt)
        layer(
            (0, 0.5 * (0.3 * b + sy), 0.46 * a, 0.5 * (sy - 0.3 * b)),
            lambda xs, ys: _soft(0.46 * a - np.abs(xs)) * _soft(ys - 0.3 * b) * _soft(sy - ys),
            skin * 0.82,
        )
        layer(
            (0, b + 0.75 * a, 0.46 * a, 0.2 * a),
            lambda xs, ys: _ellipse(xs, ys, 0, b + 0.75 * a, 0.46 * a, 0.2 * a),
            skin * 0.82,
        )  # collar opening
        for side in (-1, 1):  # ears
            ear = (side * 0.98 * a, -0.05 * b, 0.17 * a, 0.3 * a)
            layer(ear, lambda xs, ys, e=ear: _ellipse(xs, ys, *e), skin * 0.93)

        def face(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            """An ellipse whose lower half narrows towards the chin."""
            yn = ys / b
            narrow = 1.0 - ident.jaw * np.clip(yn, 0, 1) ** 2
            return _soft((1.0 - np.sqrt((xs / (a * narrow)) ** 2 + yn**2)) * a * 0.9)

        layer((0, 0, a, b), face, skin)
        if ident.beard > 0:  # painted before the mouth, which is drawn on top each frame

            def beard(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
                full = face(xs, ys) * np.clip((ys / b - 0.28) / 0.12, 0, 1)
                moustache = _ellipse(xs, ys, 0, (MOUTH_Y - 0.14) * b, 0.42 * a, 0.07 * b)
                return np.maximum(full, moustache) * ident.beard

            layer((0, 0.65 * b, a, 0.4 * b), beard, hair * 0.95, opaque=False)
        if style != "bald":  # hair on top of the head

            def cap(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
                top = _ellipse(xs, ys, 0, -0.12 * b, 1.08 * a, 1.02 * b)
                xn = xs / a
                if style == "side":
                    line = -ident.hairline * b + 0.18 * b * xn - 0.15 * b * xn**2
                else:
                    line = -ident.hairline * b + 0.28 * b * xn**2
                return top * _soft(line - ys) * _soft(0.15 * b - ys)

            layer((0, -0.12 * b, 1.08 * a, 1.02 * b), cap, hair)
        self._paint_eyes(x, y, rgb)
        # nose: a soft shadow along one side, the tip, two nostrils
        nl, nw = ident.nose_length, ident.nose_width
        ey = ident.eye_y * b
        tip_y = (0.05 + 0.2 * nl) * b
        sl = self._region(0, 0.5 * (ey + tip_y), 0.3 * a, 0.5 * (tip_y - ey) + 0.12 * b)
        xs, ys, out = x[sl], y[sl], rgb[sl]
        ridge = _soft(0.04 * a - np.abs(xs - 0.07 * a * nw)) * _soft(ys - ey) * _soft(tip_y - ys)
        _paint(out, ridge * 0.35, skin * 0.7)
        _paint(out, _ellipse(xs, ys, 0, tip_y, 0.13 * a * nw, 0.08 * b) * 0.5, skin * 0.88)
        for side in (-1, 1):
            nostril = _ellipse(xs, ys, side * 0.075 * a * nw, tip_y + 0.035 * b, 0.04 * a * nw, 0.022 * b)
            _paint(out, nostril, skin * 0.45)
        alpha *= 255.0
        return img

    def _paint_eyes(self, x: np.ndarray, y: np.ndarray, rgb: np.ndarray) -> None:
        """Eyes (sclera, iris, pupil, upper lid), brows and optional glasses, each in its own region."""
        ident, a, b = self.id, self.a, self.b
        ex, ey = ident.eye_spacing * a, ident.eye_y * b
        erx, ery = 0.16 * a * ident.eye_size, 0.085 * a * ident.eye_size
        brow_rgb = np.minimum(ident.hair, 120) * 0.8
        for side in (-1, 1):
            cx = side * ex
            sl = self._region(cx, ey, 1.75 * erx, 3.0 * ery + 0.3 * b)
            xs, ys, out = x[sl], y[sl], rgb[sl]
            eye = _ellipse(xs, ys, cx, ey, erx, ery)
            _paint(out, eye, (240, 238, 232))
            _paint(out, eye * _ellipse(xs, ys, cx, ey, 0.55 * erx, 0.58 * erx), ident.iris)
            _paint(out, eye * _ellipse(xs, ys, cx, ey, 0.24 * erx, 0.24 * erx), (15, 12, 12))
            lid_y = ey - ery * np.sqrt(np.clip(1 - ((xs - cx) / erx) ** 2, 0, 1))
            _paint(out, _soft(2.0 - np.abs(ys - lid_y)) * _soft(erx - np.abs(xs - cx)), ident.skin * 0.45)
            bx = (xs - cx) / (1.3 * erx)  # brow: a thick arc above the eye
            by = ey - 2.2 * ery - 0.05 * b * (1 - bx**2) + side * ident.brow_tilt * b * bx
            brow = _soft(ident.brow_thickness * a - np.abs(ys - by)) * _soft((1 - np.abs(bx)) * erx)
            _paint(out, brow, brow_rgb)
            if ident.glasses:
                if ident.glasses_round:
                    r = np.sqrt((xs - cx) ** 2 + (ys - ey) ** 2)
                    ring = _soft(0.028 * a - np.abs(r - 1.55 * erx))
                else:
                    d = np.maximum(np.abs(xs - cx) - 1.45 * erx, np.abs(ys - ey) - 2.2 * ery)
                    ring = _soft(0.028 * a - np.abs(d))
                _paint(out, ring, ident.glasses_rgb)
        if ident.glasses:
            sl = self._region(0, ey, ex, 0.05 * b)
            xs, ys = x[sl], y[sl]
            bridge = _soft(0.022 * a - np.abs(ys - (ey - 0.02 * b))) * _soft(ex - 1.5 * erx - np.abs(xs))
            _paint(rgb[sl], bridge, ident.glasses_rgb)

    def _lighting(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ident = self.id
        lx, ly = math.cos(ident.light_angle), math.sin(ident.light_angle)
        r2 = (x / (1.1 * self.a)) ** 2 + (y / (1.1 * self.b)) ** 2
        grad = ident.light_strength * (lx * x + ly * y) / self.a
        return (ident.ambient * (1.0 + grad - 0.12 * np.minimum(r2, 1.5))).astype(np.float32)

    def _paint_background(self) -> Image.Image:
        ident, c = self.id, self.id.size
        rng = np.random.default_rng(ident.texture_seed)
        cols = ident.bg_colours
        ys, xs = np.mgrid[0:c, 0:c].astype(np.float32) / c
        if ident.background == "flat":
            img = np.broadcast_to(cols[0], (c, c, 3)).copy()
        elif ident.background == "gradient":
            t = (math.cos(ident.bg_angle) * (xs - 0.5) + math.sin(ident.bg_angle) * (ys - 0.5)) + 0.5
            t = np.clip(t, 0, 1)[..., None]
            img = cols[0] * (1 - t) + cols[1] * t
        elif ident.background == "stripes":
            period = rng.uniform(0.05, 0.2)
            t = (math.cos(ident.bg_angle) * xs + math.sin(ident.bg_angle) * ys) / period
            m = (0.5 + 0.5 * np.sin(2 * math.pi * t))[..., None]
            img = cols[0] * (1 - m) + cols[1] * m
        else:  # texture: smooth noise at a random scale over three colours, plus fine grain
            cells = int(rng.integers(4, 24))
            small = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
            t = np.clip(np.asarray(small.resize((c, c), Image.Resampling.BICUBIC), np.float32), 0, 1)[
                ..., None
            ]
            img = np.where(
                t < 0.5, cols[0] + (cols[1] - cols[0]) * 2 * t, cols[1] + (cols[2] - cols[1]) * (2 * t - 1)
            )
            img = img + rng.normal(0, 6, (c, c, 1)).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")

    # -- per frame

    def _mouth_patch(self, openness: float, width: float, roundness: float) -> np.ndarray:
        """The shaded, reduced RGBA mouth patch (uint8, frame resolution) for one frame's parameters."""
        ss = SUPERSAMPLE
        y0, y1, x0, x1 = (v * ss for v in self._patch)
        base = self._unshaded[y0:y1, x0:x1].copy()  # (h, w, 4) fine pixels
        rgb = base[..., :3]
        px = self._x[y0:y1, x0:x1]
        py = self._y[y0:y1, x0:x1] - np.float32(MOUTH_Y * self.b)
        a, ident = self.a, self.id
        hw = a * ident.mouth_width * (0.30 + 0.16 * width - 0.12 * roundness)  # half width of the lips
        opening = MAX_OPEN * a * openness  # interior height
        iw = hw * (0.86 - 0.30 * roundness)  # half width of the opening
        lens = np.clip(1 - (px / iw) ** 2, 0, 1)
        ui = (1 - roundness) * lens + roundness * np.sqrt(lens)  # lens-shaped … elliptic opening
        top, bot = (-0.42 * opening) * ui, (0.58 * opening) * ui
        u = np.sqrt(np.clip(1 - (px / hw) ** 2, 0, 1))
        t_up = (a * ident.lip_thickness * (0.075 + 0.03 * roundness)) * u
        t_lo = (a * ident.lip_thickness * (0.095 + 0.03 * roundness)) * u
        bow = 0.25 * t_up * np.exp(-((px / (0.14 * hw)) ** 2))  # cupid's bow dip
        lips = _soft(np.minimum(py - (top - t_up + bow), (bot + t_lo) - py)) * _soft(hw - np.abs(px))
        _paint(rgb, lips, ident.lips)
        in_x = _soft(iw - np.abs(px))
        line = _soft(1.2 - np.abs(py - 0.5 * (top + bot))) * in_x * lips  # lip line of a closed mouth
        _paint(rgb, line, ident.lips * 0.45)
        inside = _soft(np.minimum(py - top, bot - py)) * in_x
        _paint(rgb, inside, INTERIOR_RGB)
        teeth_x = _soft(0.8 * iw - np.abs(px))
        upper = _soft((UPPER_TEETH - 0.42) * opening - py)
        lower = _soft(py - (0.58 - LOWER_TEETH) * opening)
        _paint(rgb, inside * teeth_x * np.maximum(upper, lower), TEETH_RGB)
        rgb *= self.light[y0:y1, x0:x1, None]
        return np.clip(np.rint(_reduce(base, ss)), 0, 255).astype(np.uint8)

    def _pose(self, k: int, motion: Motion) -> tuple[float, float, float, float]:
        """Face centre ``(cx, cy)`` in frame pixels, rotation (radians) and scale of frame ``k``."""
        size = self.id.size
        return (
            (self.id.centre[0] + float(motion.dx[k])) * size,
            (self.id.centre[1] + float(motion.dy[k])) * size,
            float(motion.angle[k]),
            float(motion.scale[k]),
        )

    def _affine(self, k: int, motion: Motion) -> tuple[float, ...]:
        """PIL's inverse affine coefficients (output pixel → sprite pixel) of frame ``k``."""
        cx, cy, th, s = self._pose(k, motion)
        cos, sin = math.cos(th) / s, math.sin(th) / s
        h = self.half
        # sprite = R(−θ)/s · (out − centre) + (h, h)
        return (cos, sin, h - cos * cx - sin * cy, -sin, cos, h + sin * cx - cos * cy)

    def face_box(self, k: int, motion: Motion) -> np.ndarray:
        """``(4,)`` float64 face box ``(x1, y1, x2, y2)`` of frame ``k`` in frame pixels (unclipped)."""
        cx, cy, th, s = self._pose(k, motion)
        ss = SUPERSAMPLE
        mid = 0.5 * (BOX_TOP + BOX_BOTTOM) * self.b / ss * s  # box centre below the face centre
        bx, by = cx - math.sin(th) * mid, cy + math.cos(th) * mid
        half_w = BOX_HALF_WIDTH * self.a / ss * s
        half_h = 0.5 * (BOX_BOTTOM - BOX_TOP) * self.b / ss * s
        return np.array([bx - half_w, by - half_h, bx + half_w, by + half_h])

    def render(
        self, mouth: np.ndarray, motion: Motion, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render ``(N, size, size, 3)`` uint8 frames and their ``(N, 4)`` float64 face boxes.

        Args:
            mouth: ``(N, 3)`` ``[openness, width, roundness]`` in [0, 1] per frame.
            motion: the head pose per frame (at least ``N`` frames).
            rng: the pixel-noise generator (from the clip seed, not the audio).
        """
        n, size = len(mouth), self.id.size
        frames = np.empty((n, size, size, 3), np.uint8)
        boxes = np.empty((n, 4), np.float64)
        y0, y1, x0, x1 = self._patch
        m = 3 if self._blur is not None else 0  # margin blurred with the patch, then dropped
        sharp = self._sprite[y0 - m : y1 + m, x0 - m : x1 + m].copy()
        sprite = self._blurred.copy()
        side = sprite.shape[0]
        # a few noise fields, re-used at random offsets (drawing fresh noise per frame costs more than
        # all the rest of a frame)
        pad = 16
        bank = rng.standard_normal((4, size + pad, size + pad, 3), np.float32) * self.id.noise
        picks = rng.integers(0, [4, pad, pad], size=(n, 3))
        for k in range(n):
            patch = self._mouth_patch(*(float(v) for v in mouth[k]))
            if self._blur is not None:
                sharp[m:-m, m:-m] = patch
                patch = np.asarray(Image.fromarray(sharp, "RGBA").filter(self._blur))[m:-m, m:-m]
            sprite[y0:y1, x0:x1] = patch
            face = Image.frombuffer("RGBA", (side, side), sprite.tobytes(), "raw", "RGBA", 0, 1)
            placed = face.transform(
                (size, size), Image.Transform.AFFINE, self._affine(k, motion), Image.Resampling.BILINEAR
            )
            frame = self.background.copy()
            frame.paste(placed, (0, 0), placed)
            i, oy, ox = picks[k]
            noisy = np.asarray(frame, np.float32) + bank[i, oy : oy + size, ox : ox + size]
            frames[k] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
            boxes[k] = self.face_box(k, motion)
        return frames, boxes


# ------------------------------------------------------------------------------------------ measuring

_LUM_MAX = 40.0  # the interior is darker than this (its colour ≈ (52, 7, 12) × lighting ≤ 1.3)
_RED_SHARE = 0.5  # ... and (R − G) / R above this (dark skin, beards, nostrils, pupils are not)
_OPEN_SCALE = 0.6 * MAX_OPEN / ((BOX_BOTTOM - BOX_TOP) * 1.28)  # gap height / crop side, full opening


def mouth_openness(crops: np.ndarray) -> np.ndarray:
    """Measure mouth openness from rendered face crops (the synthetic corpus' geometry).

    The dark mouth interior is found as very dark, strongly red pixels (luminance < 40 and
    ``(R − G) / R > 0.5``) in the lower-half centre region of each crop (rows ``S/2 … 0.95 S``, columns
    ``S/4 … 3S/4``). The opening is the mean of the three tallest columns of such pixels, divided by the
    crop side and by the gap height a fully open mouth has, so a rendered crop gives roughly its
    ground-truth openness in [0, 1] (the teeth cover a fixed 40 % of the opening, so the gap is
    proportional to it). The resolution is one pixel of gap: about ``9 / S`` openness (0.07 at
    ``S = 128``), so openings below that read as 0.

    Args:
        crops: ``(N, S, S, 3)`` uint8 RGB face crops (``faces.npy`` or generated ones).

    Returns:
        ``(N,)`` float64 openness estimates (≥ 0; may exceed 1 slightly).
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"crops must be (N, S, S, 3), got {crops.shape}")
    s = crops.shape[1]
    region = crops[:, s // 2 : round(0.95 * s), s // 4 : s - s // 4].astype(np.float32)  # (N, h, w, 3)
    r, g, b = region[..., 0], region[..., 1], region[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    dark = (lum < _LUM_MAX) & ((r - g) > _RED_SHARE * np.maximum(r, 1.0))  # (N, h, w)
    heights = np.sort(dark.sum(axis=1), axis=1)[:, -3:].mean(axis=1)  # (N,) the 3 tallest columns
    return heights / (s * _OPEN_SCALE)
