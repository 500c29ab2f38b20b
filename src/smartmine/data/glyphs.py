"""``glyphs``: the embedded default dataset, characters rendered from the fonts that ship inside matplotlib.

A class is one character (Latin, Greek and Cyrillic letters in both cases, digits, ASCII punctuation); its images
are that character in each of the 16 faces of the DejaVu Sans / Serif / Sans Mono and STIX General families
(regular, bold, oblique or italic, bold oblique or italic), each face rendered once upright and centred and
``variants_per_face - 1`` more times with a small random rotation and shift. Images are 32x32 grayscale ``uint8``,
white ink on black.

Why not digits: with 10 classes an embedding trained on 0-4 does not beat raw pixels on 5-9, so it cannot show
metric learning working; ~170 character classes split half/half can.

Rendering
    Each face is scaled so that its capital "H" is ``0.46 * size`` tall, and drawn on a 2x supersampled canvas with
    a fixed baseline (so "," and "'" or "-" and "_" keep their different heights) and the ink's horizontal centre
    in the middle; the canvas is then box-filtered down to ``size``. Case is therefore visible through size (``c``
    and ``C`` are different classes).
Dropped characters
    A character is dropped when a face has no glyph for it (checked in the font's character map, or, without
    fontTools, by comparing with the font's missing-glyph box) or renders nothing. Cross-script homoglyphs
    (Latin A, Greek Alpha, Cyrillic A; Latin p and Cyrillic er; ...) are found by rendering: two characters are
    near-identical in a face when the L1 distance of their upright renderings, divided by their total ink, is
    below ``homoglyph_tolerance``; when that holds in at least a quarter of the faces the pair is merged, and of
    each merged group only the character listed first (Latin, digits, punctuation, Greek, Cyrillic) is kept.
    A quarter rather than all faces, because a pair that is identical in 4 faces (Greek kappa and Cyrillic ka in
    the monospace faces) makes those images unlearnable label noise.
Determinism
    The jitter of character ``ch`` comes from ``np.random.default_rng([seed, ord(ch)])``, the train/test split
    from :func:`smartmine.data.splits.seeded_half_split`; the same seed, Pillow and FreeType give identical
    arrays. Rendering everything takes about 1-2 s and is cached in memory per parameter set.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from smartmine._validation import check_positive_int
from smartmine.data.base import ArrayDataset, Transform
from smartmine.data.splits import check_split, seeded_half_split

logger = logging.getLogger("smartmine.data")

GLYPH_FACES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
"""The 16 TrueType faces (file names under ``matplotlib.get_data_path()/fonts/ttf``)."""

_SUPERSAMPLE = 2
_CAP_HEIGHT = 0.46  # of the image height
_BASELINE = 0.68  # row of the baseline, as a fraction of the image height
_HOMOGLYPH_FACE_FRACTION = 0.25


def candidate_characters() -> list[str]:
    """The characters considered, in keep-priority order: Latin, digits, punctuation, Greek, Cyrillic (209)."""
    latin = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [chr(c) for c in range(ord("0"), ord("9") + 1)]
    punctuation = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    greek = [chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2] + [chr(c) for c in range(0x3B1, 0x3CA)]
    cyrillic = [chr(c) for c in range(0x410, 0x450)] + ["\u0401", "\u0451"]  # + Yo, yo
    return latin + digits + punctuation + greek + cyrillic


def font_dir() -> Path:
    """The folder of matplotlib's bundled TrueType fonts."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _face_paths() -> list[Path]:
    folder = font_dir()
    paths = [folder / f for f in GLYPH_FACES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"glyphs: matplotlib's font folder {folder} lacks {', '.join(missing)}; the glyphs dataset needs the "
            "DejaVu and STIX fonts that matplotlib ships (reinstall matplotlib)"
        )
    return paths


def _load_font(path: Path, canvas: int) -> ImageFont.FreeTypeFont:
    """The face at the point size whose capital H is ``_CAP_HEIGHT * canvas`` pixels tall."""
    probe = ImageFont.truetype(str(path), 200)
    left, top, right, bottom = probe.getbbox("H", anchor="ls")
    size = max(4, round(_CAP_HEIGHT * canvas * 200 / max(1, bottom - top)))
    return ImageFont.truetype(str(path), size)


def _covered(path: Path, font: ImageFont.FreeTypeFont, chars: list[str], canvas: int) -> np.ndarray:
    """Boolean mask: which characters have a glyph in this face."""
    try:
        from fontTools.ttLib import TTFont  # a matplotlib dependency

        cmap = TTFont(str(path), lazy=True)["cmap"].getBestCmap()
        return np.array([ord(ch) in cmap for ch in chars])
    except Exception:  # noqa: BLE001 - fall back to comparing with the missing-glyph box
        notdef = np.asarray(_draw(font, "\U0010fffd", canvas))
        return np.array([not np.array_equal(np.asarray(_draw(font, ch, canvas)), notdef) for ch in chars])


def _draw(font: ImageFont.FreeTypeFont, ch: str, canvas: int) -> Image.Image:
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    left, _, right, _ = draw.textbbox((0, 0), ch, font=font, anchor="ls")
    draw.text((canvas / 2 - (left + right) / 2, _BASELINE * canvas), ch, fill=255, font=font, anchor="ls")
    return img


@functools.lru_cache(maxsize=4)
def _upright_renders(size: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Upright supersampled renders of every candidate in every face.

    Returns ``(chars, big, ok)``: ``big`` uint8 ``(C, F, 2*size, 2*size)``, ``ok`` bool ``(C,)`` (glyph present and
    non-empty in every face).
    """
    chars = candidate_characters()
    canvas = size * _SUPERSAMPLE
    big = np.zeros((len(chars), len(GLYPH_FACES), canvas, canvas), dtype=np.uint8)
    ok = np.ones(len(chars), dtype=bool)
    for f, path in enumerate(_face_paths()):
        font = _load_font(path, canvas)
        covered = _covered(path, font, chars, canvas)
        for c, ch in enumerate(chars):
            big[c, f] = np.asarray(_draw(font, ch, canvas))
        empty = big[:, f].reshape(len(chars), -1).max(axis=1) == 0
        for c in np.flatnonzero(~covered | empty):
            if ok[c]:
                logger.debug("glyphs: dropping %r, not rendered by %s", chars[c], path.name)
        ok &= covered & ~empty
    big.setflags(write=False)
    return tuple(chars), big, ok


def _downsample(big: np.ndarray) -> np.ndarray:
    """Box-filter the last two axes of a uint8 array by :data:`_SUPERSAMPLE` (mean of each block, rounded)."""
    s = _SUPERSAMPLE
    h, w = big.shape[-2] // s, big.shape[-1] // s
    blocks = big.reshape(*big.shape[:-2], h, s, w, s).astype(np.uint32).sum(axis=(-3, -1))
    return ((blocks + s * s // 2) // (s * s)).astype(np.uint8)


def homoglyph_keep_mask(small: np.ndarray, tolerance: float) -> np.ndarray:
    """Which classes survive de-duplication, given upright renders ``small`` of shape ``(C, F, H, W)``.

    Pair ``(i, j)`` is near-identical in face ``f`` when ``sum|x_if - x_jf| / (sum x_if + sum x_jf) < tolerance``;
    pairs near-identical in at least a quarter of the faces are merged (union-find), and of each group the lowest
    index is kept. Returns a boolean mask of shape ``(C,)``.
    """
    n, faces = small.shape[:2]
    x = small.reshape(n, faces, -1).astype(np.float32)
    ink = x.sum(axis=2)  # (C, F)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    need = int(np.ceil(_HOMOGLYPH_FACE_FRACTION * faces))
    for i in range(n - 1):
        diff = np.abs(x[i + 1 :] - x[i]).sum(axis=2)  # (C-i-1, F)
        rel = diff / np.maximum(ink[i + 1 :] + ink[i], 1e-6)
        for k in np.flatnonzero((rel < tolerance).sum(axis=1) >= need):
            a, b = find(i), find(i + 1 + int(k))
            parent[max(a, b)] = min(a, b)  # the root is always the group's lowest index
    return np.array([find(i) == i for i in range(n)])


@functools.lru_cache(maxsize=4)
def _surviving_classes(size: int, tolerance: float) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Seed-independent part: ``(chars, big, small, kept)`` where ``kept`` are the indices into ``chars`` of the
    classes that survive the checks and ``small`` ``(K, F, size, size)`` their upright renders."""
    chars, big, ok = _upright_renders(size)
    candidates = np.flatnonzero(ok)
    small = _downsample(big[candidates])  # (C, F, size, size)
    keep = homoglyph_keep_mask(small, tolerance)
    dropped = [chars[c] for c in candidates[~keep]]
    logger.debug("glyphs: %d homoglyph(s) dropped: %s", len(dropped), "".join(dropped))
    small = small[keep]
    small.setflags(write=False)
    return chars, big, small, candidates[keep]


@dataclass(frozen=True)
class GlyphSet:
    """All rendered glyph classes before the split: ``images`` ``(N, size, size)`` uint8, ``labels`` ``(N,)``
    class indices into ``characters``, ``faces`` ``(N,)`` face index into :data:`GLYPH_FACES`."""

    images: np.ndarray
    labels: np.ndarray
    faces: np.ndarray
    characters: tuple[str, ...]


@functools.lru_cache(maxsize=8)
def render_glyph_set(
    seed: int = 0,
    variants_per_face: int = 3,
    size: int = 32,
    max_rotation: float = 10.0,
    max_shift: float = 2.0,
    homoglyph_tolerance: float = 0.03,
) -> GlyphSet:
    """Render every surviving character: ``variants_per_face`` images per face (the first upright and centred, the
    others rotated by up to ``max_rotation`` degrees and shifted by up to ``max_shift`` pixels), cached in memory.

    Arrays are read-only; class ``k`` is ``characters[k]``, images are ordered by class, then face, then variant.
    """
    check_positive_int(variants_per_face, "variants_per_face")
    check_positive_int(size, "size", minimum=8)
    if not 0.0 <= max_rotation <= 45.0:
        raise ValueError(f"max_rotation: expected degrees in [0, 45], got {max_rotation}")
    if not 0.0 <= max_shift <= size / 4:
        raise ValueError(f"max_shift: expected pixels in [0, {size / 4}], got {max_shift}")
    if not 0.0 <= homoglyph_tolerance < 1.0:
        raise ValueError(f"homoglyph_tolerance: expected a value in [0, 1), got {homoglyph_tolerance}")
    chars, big, small, kept = _surviving_classes(size, homoglyph_tolerance)
    n_faces = len(GLYPH_FACES)

    scale = big.shape[-1] / size
    canvas = big.shape[-1]
    moved = np.empty((len(kept), n_faces, variants_per_face - 1, canvas, canvas), dtype=np.uint8)
    for k, c in enumerate(kept):
        rng = np.random.default_rng([seed, ord(chars[c])])
        jitter = rng.uniform(-1.0, 1.0, size=(n_faces, variants_per_face - 1, 3))
        for f in range(n_faces):
            src = Image.fromarray(big[c, f])
            for v in range(1, variants_per_face):
                angle, dx, dy = jitter[f, v - 1] * (max_rotation, max_shift * scale, max_shift * scale)
                out = src.rotate(float(angle), resample=Image.Resampling.BICUBIC, translate=(dx, dy))
                moved[k, f, v - 1] = np.asarray(out)
    images = np.concatenate([small[:, :, None], _downsample(moved)], axis=2)
    labels = np.repeat(np.arange(len(kept), dtype=np.int64), n_faces * variants_per_face)
    faces = np.tile(np.repeat(np.arange(n_faces, dtype=np.int64), variants_per_face), len(kept))
    images = images.reshape(-1, size, size)
    for arr in (images, labels, faces):
        arr.setflags(write=False)
    return GlyphSet(images=images, labels=labels, faces=faces, characters=tuple(chars[c] for c in kept))


def load_glyphs(
    split: str = "train",
    transform: Transform | None = None,
    *,
    seed: int = 0,
    variants_per_face: int = 3,
    size: int = 32,
    max_rotation: float = 10.0,
    max_shift: float = 2.0,
    homoglyph_tolerance: float = 0.03,
) -> ArrayDataset:
    """The glyphs dataset's ``split`` (``"train"``, ``"test"`` or ``"all"``) as an :class:`ArrayDataset`.

    Classes are split half/half by a permutation seeded with ``seed`` (the same seed also drives the jitter).
    With the defaults: ~170 classes of 48 images (16 faces x 3 variants), 32x32. ``sample_info["face"]`` gives each
    image's face index into :data:`GLYPH_FACES`.
    """
    check_split(split)
    gs = render_glyph_set(seed, variants_per_face, size, float(max_rotation), float(max_shift), homoglyph_tolerance)
    classes = seeded_half_split(len(gs.characters), split, seed)
    rows = np.flatnonzero(np.isin(gs.labels, classes))
    return ArrayDataset(
        gs.images[rows],
        gs.labels[rows],
        list(gs.characters),
        transform,
        name="glyphs",
        split=split,
        sample_info={"face": gs.faces[rows]},
    )
