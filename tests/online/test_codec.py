"""The bulk encoder is byte-identical to msgpack.packb for every supported type, nulls included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgpack
import numpy as np
import polars as pl
import pytest

from feature_pipelines.online.codec import encode_rows, split


def _reference(frame: pl.DataFrame) -> list[bytes]:
    out = []
    for row in frame.iter_rows(named=True):
        values = []
        for name, value in row.items():
            if name == "ts" and value is not None:
                value = (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            if name == "day" and value is not None:
                value = (value - datetime(1970, 1, 1).date()).days
            if name == "vec" and value is not None:
                value = np.asarray(value, dtype="<f4").tobytes()
            values.append(value)
        out.append(msgpack.packb(values))
    return out


def test_every_integer_width_and_type_matches_msgpack():
    rng = np.random.default_rng(7)
    n = 3000
    edges = [
        0,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**63 - 1,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
    ]
    ints = np.concatenate([np.array(edges, dtype=np.int64), rng.integers(-(2**62), 2**62, n - len(edges))])
    frame = pl.DataFrame(
        {
            "i": pl.Series(ints).set(pl.Series(np.arange(n) % 13 == 0), None),
            "f": pl.Series(rng.normal(size=n)).set(pl.Series(np.arange(n) % 11 == 0), None),
            "b": pl.Series(rng.random(n) > 0.5).set(pl.Series(np.arange(n) % 7 == 0), None),
            "s": [None if k % 5 == 0 else "é✓x" * int(k % 40) + "y" * int(k % 300) for k in range(n)],
            "ts": [datetime(2011, 1, 1, tzinfo=UTC) + timedelta(seconds=k * 977) if k % 9 else None for k in range(n)],
            "day": [datetime(2011, 1, 1).date() + timedelta(days=k) for k in range(n)],
            "vec": pl.Series(
                [[float(k), -1.5, 2.25][: k % 4] if k % 6 else None for k in range(n)], dtype=pl.List(pl.Float32)
            ),
            "tags": pl.Series(
                [["a", "bé", None, "d" * 40][: k % 5] if k % 8 else None for k in range(n)], dtype=pl.List(pl.String)
            ),
        }
    )
    buf, offsets = encode_rows(frame, frame.columns)
    assert split(buf, offsets) == _reference(frame)


def test_float32_column_is_msgpack_float32():
    frame = pl.DataFrame({"x": pl.Series([1.5, None], dtype=pl.Float32)})
    buf, offsets = encode_rows(frame, ["x"])
    assert split(buf, offsets) == [msgpack.packb([1.5], use_single_float=True), msgpack.packb([None])]


def test_many_columns_use_array16_header():
    frame = pl.DataFrame({f"c{i}": [i] for i in range(20)})
    buf, offsets = encode_rows(frame, frame.columns)
    assert split(buf, offsets) == [msgpack.packb(list(range(20)))]
    assert msgpack.unpackb(split(buf, offsets)[0]) == list(range(20))


def test_unsupported_dtype_is_named():
    frame = pl.DataFrame({"weird": [pl.Series([1])]}, schema={"weird": pl.List(pl.Int64)})
    with pytest.raises(TypeError, match="column 'weird': dtype List\\(Int64\\) has no online encoding"):
        encode_rows(frame, ["weird"])


def test_uint64_beyond_int64_and_vectors_with_holes():
    values = [2**64 - 1, 5, None, 2**63, 300]
    frame = pl.DataFrame({"u": pl.Series(values, dtype=pl.UInt64)})
    buf, offsets = encode_rows(frame, ["u"])
    assert split(buf, offsets) == [msgpack.packb([v]) for v in values]
    holes = pl.DataFrame({"v": pl.Series([[1.0, None], [2.0]], dtype=pl.List(pl.Float32))})
    with pytest.raises(ValueError, match="column 'v': 1 vectors contain a null element"):
        encode_rows(holes, ["v"])
