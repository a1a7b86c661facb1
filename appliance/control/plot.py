"""Latency report figure for `appliance demo`: percentile curves and per-stage bars, written as a PNG.

No plotting library ships with the appliance, so the figure is drawn with numpy into an RGB array
(anti-aliased lines and markers, a small bitmap font defined below) and encoded here. The encoder
writes the simplest valid PNG: one IHDR, one IDAT holding a zlib stream of unfiltered rows, IEND.

```
 PNG file (all integers big-endian)
 0                               8
 +-------------------------------+
 | signature 89 50 4E 47 0D 0A 1A 0A
 +-------------------------------+---------------------------+
 | chunk | chunk | ...                                       |   IHDR first, IEND last
 +-------------------------------+---------------------------+

 chunk
 0               4               8                     8+n             12+n
 +---------------+---------------+---------------------+---------------+
 | length n u32  | type (ASCII)  | data (n bytes)      | CRC-32 u32    |  CRC over type + data
 +---------------+---------------+---------------------+---------------+

 IHDR data (13)
 0               4               8       9       10      11      12      13
 +---------------+---------------+-------+-------+-------+-------+-------+
 | width u32     | height u32    | depth | colour| compr.| filter| interl|
 +---------------+---------------+-------+-------+-------+-------+-------+
   depth 8, colour type 2 (RGB), compression 0 (deflate), filter method 0, no interlace

 IDAT data: zlib stream of `height` rows, each  [filter type 0][R G B][R G B]...  (1 + 3*width bytes)
 IEND data: empty
```
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from numbers import Real

import numpy as np

__all__ = ["latency_png", "encode_png", "PALETTE", "STAGE_P50", "STAGE_P99", "GLYPHS"]

# ---- PNG layout -----------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK_LENGTH_SIZE = 4
CHUNK_TYPE_SIZE = 4
CHUNK_CRC_SIZE = 4
CHUNK_IHDR = b"IHDR"
CHUNK_IDAT = b"IDAT"
CHUNK_IEND = b"IEND"
IHDR_SIZE = 13
OFF_IHDR_WIDTH = 0
OFF_IHDR_HEIGHT = 4
OFF_IHDR_DEPTH = 8
OFF_IHDR_COLOUR = 9
OFF_IHDR_COMPRESSION = 10
OFF_IHDR_FILTER = 11
OFF_IHDR_INTERLACE = 12
BIT_DEPTH = 8
COLOUR_TYPE_RGB = 2
FILTER_NONE = 0
MAX_DIMENSION = 2**31 - 1  # the PNG specification's limit for width and height

# ---- colours --------------------------------------------------------------------------------------
# Curve colours in the order curves are given; picked to stay apart for common colour-vision deficiencies.
PALETTE = (
    (0, 107, 178),
    (222, 102, 0),
    (0, 148, 96),
    (196, 28, 66),
    (122, 78, 186),
    (145, 96, 38),
    (214, 84, 166),
    (92, 92, 92),
    (158, 156, 0),
    (0, 168, 204),
)
STAGE_P50 = (64, 88, 122)
STAGE_P99 = (176, 192, 216)
WHITE = (255, 255, 255)
INK = (28, 28, 28)
TICK_INK = (72, 72, 72)
FRAME = (120, 120, 120)
GRID_MAJOR = (218, 218, 218)
GRID_MINOR = (238, 238, 238)
LEGEND_EDGE = (190, 190, 190)

# ---- bitmap font ----------------------------------------------------------------------------------
# 5 columns by 9 rows per glyph: rows 0-6 hold capitals and digits, rows 7-8 descenders. Rows are
# written top to bottom, '#' on and '.' off; trailing blank rows are left out.
GLYPH_W = 5
GLYPH_H = 9
CAP_H = 7
ADVANCE = GLYPH_W + 1
_FONT = {
    " ": "",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "a": "..... ..... .###. ....# .#### #...# .####",
    "b": "#.... #.... ####. #...# #...# #...# ####.",
    "c": "..... ..... .###. #.... #.... #...# .###.",
    "d": "....# ....# .#### #...# #...# #...# .####",
    "e": "..... ..... .###. #...# ##### #.... .###.",
    "f": "..##. .#..# .#... ###.. .#... .#... .#...",
    "g": "..... ..... .#### #...# #...# #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...#",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
    "j": "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "m": "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#",
    "n": "..... ..... #.##. ##..# #...# #...# #...#",
    "o": "..... ..... .###. #...# #...# #...# .###.",
    "p": "..... ..... ####. #...# #...# #...# ####. #.... #....",
    "q": "..... ..... .#### #...# #...# #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #....",
    "s": "..... ..... .###. #.... .###. ....# ####.",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##.",
    "u": "..... ..... #...# #...# #...# #..## .##.#",
    "v": "..... ..... #...# #...# #...# .#.#. ..#..",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#.",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...#",
    "y": "..... ..... #...# #...# #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... #####",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... ..... .##.. .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##..",
    ";": "..... .##.. .##.. ..... .##.. .##.. ..#.. .#...",
    "-": "..... ..... ..... .###.",
    "_": "..... ..... ..... ..... ..... ..... ..... #####",
    "=": "..... ..... ##### ..... #####",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#..",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "[": ".###. .#... .#... .#... .#... .#... .###.",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###.",
    "/": "..... ....# ...#. ..#.. .#... #....",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    "'": "..#.. ..#.. .#...",
    '"': ".#.#. .#.#.",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "*": "..... ..#.. #.#.# .###. #.#.# ..#..",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "&": ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#",
    "@": ".###. #...# #.### #.#.# #.### #.... .###.",
}


def _glyph(rows: str) -> np.ndarray:
    """One glyph's text rows as a (GLYPH_H, GLYPH_W) bool array, checked for shape."""
    lines = rows.split()
    if len(lines) > GLYPH_H or any(len(r) != GLYPH_W or set(r) - {"#", "."} for r in lines):
        raise ValueError(f"malformed glyph rows {rows!r}")
    g = np.zeros((GLYPH_H, GLYPH_W), dtype=bool)
    for i, r in enumerate(lines):
        g[i] = [ch == "#" for ch in r]
    return g


GLYPHS = {ch: _glyph(rows) for ch, rows in _FONT.items()}
_SUBSTITUTES = {"µ": "u", "μ": "u", "\t": " ", "–": "-", "—": "-"}


# ---- PNG encoder ----------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb: np.ndarray) -> bytes:
    """The PNG file bytes for an RGB image given as a uint8 array of shape (height, width, 3)."""
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"encode_png wants a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"encode_png wants dtype uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png wants shape (height, width, 3), got {rgb.shape}")
    h, w = rgb.shape[:2]
    if not (0 < h <= MAX_DIMENSION and 0 < w <= MAX_DIMENSION):
        raise ValueError(f"image size {w}x{h} is outside 1..{MAX_DIMENSION}")
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = FILTER_NONE
    rows[:, 1:] = rgb.reshape(h, 3 * w)
    ihdr = bytearray(IHDR_SIZE)
    struct.pack_into(">I", ihdr, OFF_IHDR_WIDTH, w)
    struct.pack_into(">I", ihdr, OFF_IHDR_HEIGHT, h)
    ihdr[OFF_IHDR_DEPTH] = BIT_DEPTH
    ihdr[OFF_IHDR_COLOUR] = COLOUR_TYPE_RGB
    ihdr[OFF_IHDR_COMPRESSION] = 0
    ihdr[OFF_IHDR_FILTER] = 0
    ihdr[OFF_IHDR_INTERLACE] = 0
    return b"".join((
        PNG_SIGNATURE,
        _chunk(CHUNK_IHDR, bytes(ihdr)),
        _chunk(CHUNK_IDAT, zlib.compress(rows.tobytes(), 6)),
        _chunk(CHUNK_IEND, b""),
    ))


# ---- raster primitives ----------------------------------------------------------------------------
class _Canvas:
    """A float RGB raster with the few drawing operations the figure needs; pixel centres sit on integers."""

    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.px = np.full((h, w, 3), 255.0, dtype=np.float32)

    def blend(self, alpha: np.ndarray, x: int, y: int, colour) -> None:
        """Blend `colour` through an alpha mask whose top-left pixel lands on (x, y), clipped to the canvas."""
        ah, aw = alpha.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + aw, self.w), min(y + ah, self.h)
        if x0 >= x1 or y0 >= y1:
            return
        a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
        region = self.px[y0:y1, x0:x1]
        region += (np.asarray(colour, dtype=np.float32) - region) * a

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour) -> None:
        """Fill the pixels whose centres lie in [x0, x1) x [y0, y1)."""
        xa, ya = max(int(math.ceil(x0)), 0), max(int(math.ceil(y0)), 0)
        xb, yb = min(int(math.ceil(x1)), self.w), min(int(math.ceil(y1)), self.h)
        if xa < xb and ya < yb:
            self.px[ya:yb, xa:xb] = colour

    def outline(self, x0: int, y0: int, x1: int, y1: int, colour) -> None:
        self.rect(x0, y0, x1 + 1, y0 + 1, colour)
        self.rect(x0, y1, x1 + 1, y1 + 1, colour)
        self.rect(x0, y0, x0 + 1, y1 + 1, colour)
        self.rect(x1, y0, x1 + 1, y1 + 1, colour)

    def polyline(self, pts: list[tuple[float, float]], colour, width: float) -> None:
        """An anti-aliased polyline: one alpha mask (max over segments) so joints are not blended twice."""
        if len(pts) < 2:
            return
        r = width / 2.0
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        bx, by = int(math.floor(min(xs) - r - 1)), int(math.floor(min(ys) - r - 1))
        bw, bh = int(math.ceil(max(xs) + r + 1)) - bx + 1, int(math.ceil(max(ys) + r + 1)) - by + 1
        mask = np.zeros((bh, bw), dtype=np.float32)
        for (ax, ay), (cx, cy) in zip(pts, pts[1:]):
            sx, sy = int(math.floor(min(ax, cx) - r - 1)), int(math.floor(min(ay, cy) - r - 1))
            ex, ey = int(math.ceil(max(ax, cx) + r + 1)), int(math.ceil(max(ay, cy) + r + 1))
            gy, gx = np.mgrid[sy:ey + 1, sx:ex + 1].astype(np.float32)
            dx, dy = cx - ax, cy - ay
            den = dx * dx + dy * dy
            t = np.zeros_like(gx) if den == 0 else np.clip(((gx - ax) * dx + (gy - ay) * dy) / den, 0.0, 1.0)
            d = np.hypot(gx - (ax + t * dx), gy - (ay + t * dy))
            sub = mask[sy - by:ey - by + 1, sx - bx:ex - bx + 1]
            np.maximum(sub, np.clip(r + 0.5 - d, 0.0, 1.0), out=sub)
        self.blend(mask, bx, by, colour)

    def marker(self, cx: float, cy: float, shape: int, size: float, colour) -> None:
        """A filled marker (circle, square, diamond, triangle by `shape` mod 4) with a white halo."""
        for extra, c in ((1.6, WHITE), (0.0, colour)):
            r = size + extra
            x0, y0 = int(math.floor(cx - r - 2)), int(math.floor(cy - r - 2))
            n = int(2 * r + 5)
            gy, gx = np.mgrid[y0:y0 + n, x0:x0 + n].astype(np.float32)
            dx, dy = gx - cx, gy - cy
            kind = shape % 4
            if kind == 0:
                d = np.hypot(dx, dy) - r
            elif kind == 1:
                d = np.maximum(np.abs(dx), np.abs(dy)) - r * 0.86
            elif kind == 2:
                d = (np.abs(dx) + np.abs(dy)) / math.sqrt(2.0) - r * 0.86
            else:
                # An upward triangle: the largest distance past any of its three edges.
                d = np.maximum(np.maximum(dy, -0.866 * dx - 0.5 * dy), 0.866 * dx - 0.5 * dy) - r * 0.62
            self.blend(np.clip(0.5 - d, 0.0, 1.0), x0, y0, c)

    def text(self, s: str, x: float, y: float, colour, scale: int = 2, ha: str = "left", va: str = "top",
             bold: bool = False, rotate: bool = False) -> int:
        """Draw `s` anchored at (x, y); returns its width in pixels. `rotate` writes it bottom to top."""
        mask = _text_mask(s, scale, bold)
        if rotate:
            mask = np.rot90(mask)
        h, w = mask.shape
        # Unrotated text is placed by its cap height so that descenders hang below the anchor line.
        tall = h if rotate else CAP_H * scale
        if ha == "center":
            x -= w / 2.0
        elif ha == "right":
            x -= w
        if va == "center":
            y -= tall / 2.0
        elif va == "bottom":
            y -= tall
        self.blend(mask.astype(np.float32), int(round(x)), int(round(y)), colour)
        return h if rotate else w

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.px), 0, 255).astype(np.uint8)


def _clean_text(s) -> str:
    s = str(s)
    for k, v in _SUBSTITUTES.items():
        s = s.replace(k, v)
    return "".join(ch if ch in GLYPHS else "?" for ch in s)


def _text_mask(s: str, scale: int, bold: bool = False) -> np.ndarray:
    s = _clean_text(s)
    mask = np.zeros((GLYPH_H * scale, (max(len(s) * ADVANCE - 1, 1)) * scale + int(bold)), dtype=bool)
    for i, ch in enumerate(s):
        g = np.repeat(np.repeat(GLYPHS[ch], scale, axis=0), scale, axis=1)
        mask[:, i * ADVANCE * scale:(i * ADVANCE + GLYPH_W) * scale] |= g
    if bold:
        # Thicken by one output pixel, not one font pixel, so the one-pixel gaps inside m, w, M stay open.
        mask[:, 1:] |= mask[:, :-1].copy()
    return mask


def _text_width(s: str, scale: int = 2, bold: bool = False) -> int:
    """Width in pixels that `s` takes when drawn at `scale`."""
    return max(len(_clean_text(s)) * ADVANCE - 1, 1) * scale + int(bold)


def _fit(s: str, max_px: int, scale: int) -> str:
    """`s`, shortened with '..' if it would be wider than `max_px`."""
    s = _clean_text(s)
    if _text_width(s, scale) <= max_px:
        return s
    keep = max((max_px // scale + 1) // ADVANCE - 2, 0)
    return s[:keep] + ".."


# ---- scales and labels ----------------------------------------------------------------------------
PERCENTILE_TICKS = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999, 99.99999)
DEFAULT_P_RANGE = (50.0, 99.99)  # always shown, so figures from different runs line up
DEFAULT_NS_RANGE = (1_000.0, 100_000.0)  # shown when there is no data at all
NS_LIMITS = (1e-3, 1e15)  # latencies outside this are not measurements; skipping them keeps the axis finite
_UNITS = ((1e9, "s"), (1e6, "ms"), (1e3, "us"), (1.0, "ns"))


def _p_to_x(p: float) -> float:
    """Percentile to the HdrHistogram abscissa log10(1 / (1 - p/100)): each further nine one step right."""
    return -math.log10(1.0 - p / 100.0)


def _ticks_125(lo: float, hi: float) -> list[float]:
    """The 1-2-5 values (1, 2, 5, 10, 20, ...) in [lo, hi]."""
    out = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = float(f"{m}e{e}")  # exact decimal, no 2 * 10**-1 float noise
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(v)
    return out


def _ns_range(values: list[float]) -> tuple[float, float]:
    """An axis range in ns that holds `values` with a little room, ending on 1-2-5 values."""
    if not values:
        return DEFAULT_NS_RANGE
    lo, hi = min(values) / 1.25, max(values) * 1.25
    ticks = _ticks_125(lo / 5.0, hi * 5.0)
    return max(t for t in ticks if t <= lo), min(t for t in ticks if t >= hi)


def _fmt_ns(v: float) -> str:
    """A latency in ns as at most three significant digits in ns, us, ms or s."""
    v = float(f"{v:.3g}")
    for scale, unit in _UNITS:
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


def _fmt_p(p: float) -> str:
    return f"{p:g}%"


def _labelled(ticks: list[float], pos, min_gap: float) -> list[float]:
    """The ticks to label: every 1-2-5 tick if they are `min_gap` px apart, else decades, else every k-th decade."""
    def spread(vals):
        ps = sorted(pos(v) for v in vals)
        return min((b - a for a, b in zip(ps, ps[1:])), default=math.inf)

    if spread(ticks) >= min_gap:
        return ticks
    decades = [t for t in ticks if f"{t:e}".startswith("1.")]
    for k in range(1, len(decades) + 1):
        pick = decades[::k]
        if spread(pick) >= min_gap:
            return pick
    return decades[:1]


def _num(v) -> float | None:
    """`v` as a finite float, or None for anything else (None, strings, NaN, infinities)."""
    if isinstance(v, bool) or not isinstance(v, (Real, np.integer, np.floating)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _clean_curves(curves) -> list[tuple[str, list[tuple[float, float]]]]:
    """(label, points sorted by percentile) per curve; points that cannot be drawn are skipped.

    Drawable means a pair of finite numbers with 0 <= percentile < 100 (100 has no place on this axis)
    and a latency within NS_LIMITS (the axis is logarithmic, so not 0)."""
    out = []
    for label, pts in (curves or {}).items():
        good = {}
        for pt in pts or ():
            if not isinstance(pt, (tuple, list)) or len(pt) != 2:
                continue
            p, v = _num(pt[0]), _num(pt[1])
            if p is None or v is None or not 0.0 <= p < 100.0 or not NS_LIMITS[0] <= v <= NS_LIMITS[1]:
                continue
            good[p] = v  # a repeated percentile keeps its last value
        out.append((_clean_text(label), sorted(good.items())))
    return out


def _clean_stages(stages) -> list[tuple[str, float | None, float | None]]:
    """(label, p50, p99) per stage, a value None where it is missing or not a number within NS_LIMITS."""
    out = []
    for label, d in (stages or {}).items():
        vals = []
        for key in ("p50", "p99"):
            v = _num(d.get(key)) if isinstance(d, dict) else None
            vals.append(v if v is not None and NS_LIMITS[0] <= v <= NS_LIMITS[1] else None)
        out.append((_clean_text(label), vals[0], vals[1]))
    return out


# ---- figure ---------------------------------------------------------------------------------------
MIN_WIDTH = 400
MIN_HEIGHT = 300
S = 2  # text scale: 10x14 px capitals read comfortably at 1000x620
LINE_W = 2.6
MARKER_R = 4.5


def _draw_curves(cv: _Canvas, series, box) -> None:
    """Percentile curves in `box` (x0, y0, x1, y1): log percentile abscissa, log latency ordinate, legend."""
    bx0, by0, bx1, by1 = box
    xs = [_p_to_x(p) for _, pts in series for p, _ in pts]
    ys = [v for _, pts in series for _, v in pts]
    xlo = min([_p_to_x(DEFAULT_P_RANGE[0])] + xs)
    xhi = max([_p_to_x(DEFAULT_P_RANGE[1])] + xs)
    pad = (xhi - xlo) * 0.03
    xlo, xhi = xlo - pad, xhi + pad
    ylo, yhi = _ns_range(ys)
    lylo, lyhi = math.log10(ylo), math.log10(yhi)

    top = by0 + 6
    bottom = by1 - (CAP_H * S + 10) * 2 - 4  # tick labels, then the axis title
    ticks_y = _ticks_125(ylo, yhi)
    y_of = lambda v: bottom - (math.log10(v) - lylo) / (lyhi - lylo) * (bottom - top)  # noqa: E731
    labels_y = _labelled(ticks_y, y_of, CAP_H * S + 8)
    label_w = max(_text_width(_fmt_ns(t), S) for t in labels_y)
    left = bx0 + GLYPH_H * S + 14 + label_w + 10
    shown_p = [p for p in PERCENTILE_TICKS if xlo <= _p_to_x(p) <= xhi]
    right = bx1 - max(16, _text_width(_fmt_p(shown_p[-1]), S) // 2 + 4)  # room for the last label's right half
    x_of = lambda x: left + (x - xlo) / (xhi - xlo) * (right - left)  # noqa: E731

    for t in ticks_y:
        y = round(y_of(t))
        cv.rect(left, y, right + 1, y + 1, GRID_MAJOR if t in labels_y else GRID_MINOR)
    last_end = -math.inf
    for p in PERCENTILE_TICKS:
        x = _p_to_x(p)
        if not xlo <= x <= xhi:
            continue
        px = round(x_of(x))
        cv.rect(px, top, px + 1, bottom + 1, GRID_MAJOR)
        cv.rect(px, bottom, px + 1, bottom + 5, FRAME)
        s = _fmt_p(p)
        w = _text_width(s, S)
        if px - w / 2 > last_end + 8:  # skip a label that would run into the previous one
            cv.text(s, px, bottom + 8, TICK_INK, S, ha="center")
            last_end = px + w / 2
    for t in labels_y:
        y = round(y_of(t))
        cv.rect(left - 5, y, left, y + 1, FRAME)
        cv.text(_fmt_ns(t), left - 9, y, TICK_INK, S, ha="right", va="center")
    cv.outline(left, top, right, bottom, FRAME)
    cv.text("percentile", (left + right) / 2, bottom + 8 + CAP_H * S + 10, INK, S, ha="center")
    cv.text("latency", bx0 + 4, (top + bottom) / 2, INK, S, va="center", rotate=True)

    drawn = []
    for i, (_, pts) in enumerate(series):
        screen = [(x_of(_p_to_x(p)), y_of(v)) for p, v in pts]
        drawn.append(screen)
        colour = PALETTE[i % len(PALETTE)]
        cv.polyline(screen, colour, LINE_W)
        for x, y in screen:
            cv.marker(x, y, i, MARKER_R, colour)
    if not any(drawn):
        cv.text("no latency data", (left + right) / 2, (top + bottom) / 2, TICK_INK, S, ha="center", va="center")
    if series:
        _legend(cv, series, drawn, (left, top, right, bottom))


def _legend(cv: _Canvas, series, drawn, plot) -> None:
    """A boxed legend in whichever of the top-left and bottom-right corners covers fewer curve points."""
    left, top, right, bottom = plot
    row_h = GLYPH_H * S + 6
    swatch = 34
    max_label = (right - left) // 2
    labels = [_fit(label if pts else f"{label} (no data)", max_label, S) for label, pts in series]
    w = 10 + swatch + 8 + max(_text_width(s, S) for s in labels) + 10
    h = 8 + row_h * len(labels) + 2
    # Sample along each curve so that a long segment crossing a corner counts, not only its end points.
    samples = []
    for pts in drawn:
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            samples += [(ax + (bx - ax) * k / 16, ay + (by - ay) * k / 16) for k in range(16)]
        samples += pts
    corners = [(left + 10, top + 10), (right - 10 - w, bottom - 10 - h)]
    inside = [sum(cx - 6 <= x <= cx + w + 6 and cy - 6 <= y <= cy + h + 6 for x, y in samples) for cx, cy in corners]
    cx, cy = corners[int(inside[1] < inside[0])]
    cv.rect(cx, cy, cx + w, cy + h, WHITE)
    cv.outline(cx, cy, cx + w, cy + h, LEGEND_EDGE)
    for i, s in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        ym = cy + 8 + row_h * i + CAP_H * S / 2
        cv.polyline([(cx + 10, ym), (cx + 10 + swatch, ym)], colour, LINE_W)
        cv.marker(cx + 10 + swatch / 2, ym, i, MARKER_R, colour)
        cv.text(s, cx + 10 + swatch + 8, ym, INK, S, va="center")


def _draw_stages(cv: _Canvas, rows, box) -> None:
    """Per-stage horizontal bars in `box`: p50 solid, p99 a lighter extension, values at the bar end."""
    bx0, by0, bx1, by1 = box
    values = [v for _, a, b in rows for v in (a, b) if v is not None]
    lo, hi = _ns_range(values)
    llo, lhi = math.log10(lo), math.log10(hi)

    header_y = by0 + 4
    cv.text("per-stage latency", bx0 + 8, header_y, INK, S, bold=True)
    key_x = bx0 + 8 + _text_width("per-stage latency", S, True) + 24
    for name, colour in (("p50", STAGE_P50), ("p99", STAGE_P99)):
        cv.rect(key_x, header_y, key_x + 22, header_y + CAP_H * S, colour)
        key_x += 22 + 6 + cv.text(name, key_x + 28, header_y, INK, S) + 18

    texts = []
    for _, a, b in rows:
        if a is not None and b is not None:
            texts.append(f"{_fmt_ns(a)} / {_fmt_ns(b)}")
        elif a is None and b is None:
            texts.append("n/a")
        else:
            texts.append(f"p50 {_fmt_ns(a)}" if a is not None else f"p99 {_fmt_ns(b)}")
    top = header_y + CAP_H * S + 12
    bottom = by1 - (CAP_H * S + 14)
    row_h = (bottom - top) / max(len(rows), 1)
    ts = S if row_h >= CAP_H * S + 4 else 1  # many stages in little room get the small font
    ticks = _ticks_125(lo, hi)
    tick_w = max(_text_width(_fmt_ns(t), S) for t in ticks)
    # Wide enough for the longest stage name, and for half the first tick label centred on the axis.
    label_w = max(min(max(_text_width(l, ts) for l, _, _ in rows), (bx1 - bx0) // 4), tick_w // 2 - 12)
    left = bx0 + 8 + label_w + 12
    right = bx1 - 16 - max(_text_width(t, ts) for t in texts) - 10
    x_of = lambda v: left + (math.log10(v) - llo) / (lhi - llo) * (right - left)  # noqa: E731

    labelled = _labelled(ticks, x_of, tick_w + 14)
    for t in ticks:
        x = round(x_of(t))
        cv.rect(x, top, x + 1, bottom + 1, GRID_MAJOR if t in labelled else GRID_MINOR)
    for t in labelled:
        x = round(x_of(t))
        cv.rect(x, bottom, x + 1, bottom + 5, FRAME)
        cv.text(_fmt_ns(t), x, bottom + 8, TICK_INK, S, ha="center")
    cv.rect(left, top, left + 1, bottom + 1, FRAME)
    cv.rect(left, bottom, right + 1, bottom + 1, FRAME)

    bar_h = max(min(row_h * 0.62, 24.0), 1.0)
    every = max(1, math.ceil((CAP_H * ts + 2) / row_h))  # rows too thin for text get every k-th label only
    for i, ((label, p50, p99), t) in enumerate(zip(rows, texts)):
        ym = top + row_h * (i + 0.5)
        if i % every == 0:
            cv.text(_fit(label, label_w, ts), left - 10, ym, INK, ts, ha="right", va="center")
        end = left + 1
        if p99 is not None:
            end = max(end, x_of(p99))
            cv.rect(left + 1, ym - bar_h / 2, x_of(p99), ym + bar_h / 2, STAGE_P99)
        if p50 is not None:
            end = max(end, x_of(p50))
            cv.rect(left + 1, ym - bar_h / 2, x_of(p50), ym + bar_h / 2, STAGE_P50)
        if i % every == 0:
            cv.text(t, end + 8, ym, INK, ts, va="center")


def _render(title: str, curves, stages, width: int, height: int) -> np.ndarray:
    cv = _Canvas(width, height)
    scale = 3 if _text_width(title, 3, True) <= width - 40 else S
    cv.text(_fit(title, width - 40, scale), width / 2, 12, INK, scale, ha="center", bold=True)
    body_top = 12 + CAP_H * scale + 14
    series = _clean_curves(curves)
    rows = _clean_stages(stages)
    if rows:
        # The stage panel grows with the number of stages but never takes more than 45% of the body.
        want = CAP_H * S + 16 + len(rows) * 30 + CAP_H * S + 14
        stage_h = int(min(want, (height - body_top) * 0.45))
        split = height - stage_h - 8
        _draw_curves(cv, series, (8, body_top, width - 8, split - 10))
        cv.rect(16, split, width - 16, split + 1, GRID_MAJOR)
        _draw_stages(cv, rows, (8, split + 8, width - 8, height - 4))
    else:
        _draw_curves(cv, series, (8, body_top, width - 8, height - 8))
    return cv.to_uint8()


def latency_png(path, title: str, curves: dict[str, list[tuple[float, float]]], stages: dict[str, dict[str, float]] | None = None,
                width: int = 1000, height: int = 620) -> None:
    """Write a PNG: left/top panel = percentile curves, bottom panel = per-stage bars."""
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) or not isinstance(height, int):
        raise TypeError(f"width and height must be integers, got {width!r} x {height!r}")
    if width < MIN_WIDTH or height < MIN_HEIGHT or width > 8000 or height > 8000:
        raise ValueError(f"figure size {width}x{height} is outside {MIN_WIDTH}x{MIN_HEIGHT} .. 8000x8000")
    data = encode_png(_render(title, curves, stages, width, height))
    # Write beside the target and rename, so a reader never sees half a file.
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
