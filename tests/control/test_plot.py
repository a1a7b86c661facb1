"""The demo's latency PNG: read back with an independent reader written from the PNG specification."""

import struct
import zlib

import numpy as np
import pytest

from appliance.control.plot import GLYPHS, PALETTE, STAGE_P50, STAGE_P99, encode_png, latency_png

# Literal values from the PNG specification, not the module's constants, so a wrong constant there fails here.
SIGNATURE = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])

FUSED = [(50, 4200), (90, 5100), (99, 9000), (99.9, 30000), (99.99, 80000)]
SPLIT = [(50, 9800), (90, 14000), (99, 41000), (99.9, 150000), (99.99, 600000)]
STAGES = {
    "feed decode": {"p50": 180, "p99": 900},
    "book": {"p50": 95, "p99": 400},
    "strategy": {"p50": 60, "p99": 350},
    "risk": {"p50": 40, "p99": 210},
    "send": {"p50": 3100, "p99": 12000},
    "tick-to-trade": {"p50": 4200, "p99": 9000},
}


def read_png(data: bytes):
    """(IHDR fields, chunk types in order, RGB array) of an 8-bit RGB non-interlaced PNG with filter 0 rows."""
    assert data[:8] == SIGNATURE
    pos, kinds, idat, ihdr = 8, [], b"", None
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert len(body) == length, f"chunk {kind!r} runs past the end of the file"
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body), f"bad CRC on chunk {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            ihdr = dict(zip(("width", "height", "depth", "colour", "compression", "filter", "interlace"),
                            struct.unpack(">IIBBBBB", body)))
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert pos == len(data), "trailing bytes after the last chunk"
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    assert (ihdr["depth"], ihdr["colour"], ihdr["compression"], ihdr["filter"], ihdr["interlace"]) == (8, 2, 0, 0, 0)
    w, h = ihdr["width"], ihdr["height"]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    assert raw.size == h * (1 + 3 * w)
    rows = raw.reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all(), "a row uses a filter other than 0"
    return ihdr, kinds, rows[:, 1:].reshape(h, w, 3)


def write_and_read(tmp_path, *args, **kwargs):
    path = tmp_path / "latency.png"
    latency_png(path, *args, **kwargs)
    return read_png(path.read_bytes())


def colour_rows(img, colour) -> np.ndarray:
    """Row indices of every pixel that is exactly `colour`."""
    return np.nonzero((img == np.array(colour, dtype=np.uint8)).all(axis=2))[0]


def test_encode_png_round_trips_exactly():
    rng = np.random.default_rng(7)
    for h, w in ((1, 1), (5, 9), (17, 3)):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ihdr, kinds, back = read_png(encode_png(img))
        assert (ihdr["width"], ihdr["height"]) == (w, h)
        assert kinds == [b"IHDR", b"IDAT", b"IEND"]
        assert np.array_equal(back, img)
    # A non-contiguous view encodes its own pixels, not its parent's memory.
    big = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    assert np.array_equal(read_png(encode_png(big[::2, 1::3]))[2], big[::2, 1::3])


@pytest.mark.parametrize("bad, error", [
    (np.zeros((4, 4, 3), dtype=np.float32), TypeError),
    (np.zeros((4, 4), dtype=np.uint8), ValueError),
    (np.zeros((4, 4, 4), dtype=np.uint8), ValueError),
    (np.zeros((0, 4, 3), dtype=np.uint8), ValueError),
    ([[[0, 0, 0]]], TypeError),
])
def test_encode_png_rejects_what_it_cannot_encode(bad, error):
    with pytest.raises(error):
        encode_png(bad)


def test_report_figure_is_a_valid_png_with_both_curves_and_the_stage_bars(tmp_path):
    ihdr, _, img = write_and_read(tmp_path, "tick-to-trade latency: fused vs split", {"fused": FUSED, "split": SPLIT}, STAGES)
    assert (ihdr["width"], ihdr["height"]) == (1000, 620)
    # Mostly white background, but a real drawing: many distinct colours and a fair share of non-white pixels.
    white = (img == 255).all(axis=2)
    assert 0.5 < white.mean() < 0.97
    packed = (img[..., 0].astype(np.uint32) << 16) | (img[..., 1].astype(np.uint32) << 8) | img[..., 2]
    assert np.unique(packed).size > 50
    # The title is dark text in the top band.
    assert (img[:40].max(axis=2) < 80).sum() > 200

    fused, split = colour_rows(img, PALETTE[0]), colour_rows(img, PALETTE[1])
    assert fused.size > 300 and split.size > 300, "a curve's colour is missing"
    # Row 0 is the top of the image: the slower layout must sit higher, i.e. at smaller row numbers.
    assert split.mean() + 20 < fused.mean()
    # The bars are in the bottom panel, below every curve pixel.
    p50, p99 = colour_rows(img, STAGE_P50), colour_rows(img, STAGE_P99)
    assert p50.size > 1000 and p99.size > 1000
    assert p50.min() > max(fused.max(), split.max()) - 40  # the legend swatch in the key may sit a little higher


def test_curves_alone_fill_the_figure_and_have_no_bars(tmp_path):
    _, _, img = write_and_read(tmp_path, "fused only", {"fused": FUSED}, width=640, height=400)
    assert img.shape == (400, 640, 3)
    assert colour_rows(img, PALETTE[0]).size > 200
    assert colour_rows(img, STAGE_P50).size == 0 and colour_rows(img, STAGE_P99).size == 0


def test_curve_order_sets_the_colour_not_the_values(tmp_path):
    # Swapping the order swaps the colours: the higher curve is now PALETTE[0].
    _, _, img = write_and_read(tmp_path, "swapped", {"split": SPLIT, "fused": FUSED})
    assert colour_rows(img, PALETTE[0]).mean() + 20 < colour_rows(img, PALETTE[1]).mean()


def test_empty_and_malformed_input_still_draws_a_valid_figure(tmp_path):
    curves = {
        "empty": [],
        "none": None,
        "junk": [None, (50,), (None, 300), (90, None), (99, -5), (99.9, 0), (100, 7000), (-1, 50),
                 (float("nan"), 10), (99, float("inf")), (99, 1e308), (99, 1e-300), ("50", 100), (True, 5), "x"],
    }
    stages = {"nothing": {}, "half": {"p50": None, "p99": 1000}, "gone": None, "wrong": {"p50": "fast"}, "huge": {"p50": 1e308}}
    ihdr, _, img = write_and_read(tmp_path, "", curves, stages)
    assert (ihdr["width"], ihdr["height"]) == (1000, 620)
    assert not (img == 255).all(), "axes and labels should still be drawn"
    assert colour_rows(img, STAGE_P99).size > 100, "the one stage with a p99 gets its bar"
    ihdr, _, _ = write_and_read(tmp_path, "no curves at all", {}, None)
    assert (ihdr["width"], ihdr["height"]) == (1000, 620)


def test_a_mixture_of_good_and_bad_points_draws_the_good_ones(tmp_path):
    _, _, img = write_and_read(tmp_path, "partly good", {"a": [None, (50, 4000), (90, "x"), (99, 9000)]})
    assert colour_rows(img, PALETTE[0]).size > 100


@pytest.mark.parametrize("size", [(399, 620), (1000, 299), (10**6, 620)])
def test_rejects_unusable_figure_sizes(tmp_path, size):
    with pytest.raises(ValueError):
        latency_png(tmp_path / "x.png", "t", {}, None, *size)
    assert not (tmp_path / "x.png").exists()


def test_font_covers_the_labels_and_every_glyph_is_distinct():
    needed = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.,:-%()/ _=<>")
    assert needed <= set(GLYPHS)
    seen = {}
    for ch, g in GLYPHS.items():
        assert g.shape == (9, 5) and g.dtype == bool
        assert (ch == " ") == (not g.any()), f"glyph {ch!r} is blank or the space is not"
        key = g.tobytes()
        assert key not in seen, f"glyphs {seen.get(key)!r} and {ch!r} are identical"
        seen[key] = ch
