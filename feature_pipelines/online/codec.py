"""Bulk MessagePack encoding of feature rows: one positional array per entity, built with numpy.

The output is byte-identical to `msgpack.packb(row)` with the smallest encoding of every integer (so any
MessagePack library in any language decodes it), but no Python object is created per value: each column
is encoded with a handful of vectorized operations into one flat buffer. See docs/online-key-spec.md.

Decoding is plain MessagePack plus `value_converter` for the types MessagePack has no form of.

Value mapping: integers -> msgpack int; floats -> float 64 (float 32 for Float32); booleans -> bool;
strings -> str; timestamps -> int microseconds since the Unix epoch (UTC); dates -> int days since the
epoch; float32 vectors -> bin (little-endian float32); lists of strings -> array of str; null -> nil.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

NIL, FALSE, TRUE = 0xC0, 0xC2, 0xC3


@dataclass
class _Column:
    """How many bytes each row of a column takes, and how to write them at given start offsets."""

    lengths: np.ndarray
    write: Callable[[np.ndarray, np.ndarray], None]


def encode_rows(frame: pl.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encode each row of `frame[columns]` as a msgpack array. Returns `(buffer, offsets)`:
    row i is `buffer[offsets[i]:offsets[i + 1]]`."""
    row_len, write = _plan_rows(frame, columns)
    offsets = np.zeros(frame.height + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    write(buf, offsets[:-1].copy())
    return buf, offsets


def encode_set_commands(keys: pl.Series, frame: pl.DataFrame, columns: list[str], ttl_ms: int) -> bytes:
    """The Redis protocol (RESP) of `SET key value [PX ttl]` for every row, built in one buffer.

    The value of row i is the msgpack array of `frame[columns]` row i. Building the commands in bulk lets
    the writer stream them to Redis with one `sendall` per batch, with no Python object per row."""
    val_len, write_values = _plan_rows(frame, columns)
    return _set_commands(keys, val_len, write_values, ttl_ms)


def encode_text_set_commands(keys: pl.Series, values: pl.Series, ttl_ms: int) -> bytes:
    """`SET key value [PX ttl]` for every row, the value being plain UTF-8 text (an alias's person id)."""
    val_len, data = _utf8(values)

    def write_values(buf: np.ndarray, starts: np.ndarray) -> None:
        _copy_payload(buf, starts, data, val_len)

    return _set_commands(keys, val_len, write_values, ttl_ms)


def _set_commands(keys: pl.Series, val_len: np.ndarray, write_values, ttl_ms: int) -> bytes:
    n = len(keys)
    key_len, key_data = _utf8(keys)
    tail = f"\r\n$2\r\nPX\r\n${len(str(ttl_ms))}\r\n{ttl_ms}\r\n" if ttl_ms else "\r\n"
    head = b"*5\r\n$3\r\nSET\r\n$" if ttl_ms else b"*3\r\n$3\r\nSET\r\n$"
    klen_digits = _decimal(key_len)
    vlen_digits = _decimal(val_len)
    # Row layout: head, len(key), CRLF, key, CRLF $, len(value), CRLF, value, tail.
    parts: list[tuple[np.ndarray, np.ndarray]] = [
        _constant(head, n),
        klen_digits,
        _constant(b"\r\n", n),
        (key_len, key_data),
        _constant(b"\r\n$", n),
        vlen_digits,
        _constant(b"\r\n", n),
    ]
    prefix_len = sum(lengths for lengths, _ in parts)
    tail_bytes = tail.encode()
    row_len = prefix_len + val_len + len(tail_bytes)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    at = offsets[:-1].copy()
    for lengths, data in parts:
        _copy_payload(buf, at, data, lengths)
        at += lengths
    write_values(buf, at.copy())
    at += val_len
    buf[at[:, None] + np.arange(len(tail_bytes))] = np.frombuffer(tail_bytes, dtype=np.uint8)
    return buf.tobytes()


def _constant(chunk: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, len(chunk), dtype=np.int64), np.tile(np.frombuffer(chunk, dtype=np.uint8), n)


def _decimal(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ASCII decimal digits of non-negative integers: (length per value, concatenated digits)."""
    return _utf8(pl.Series(values).cast(pl.String))


def _plan_rows(frame: pl.DataFrame, columns: list[str]):
    """Length of each row's msgpack array, and a writer that fills it in at given start offsets."""
    n = frame.height
    n_cols = len(columns)
    header_len = 1 if n_cols < 16 else 3
    encoded = [_encode_column(frame[c]) for c in columns]
    row_len = np.full(n, header_len, dtype=np.int64)
    for col in encoded:
        row_len += col.lengths

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        if n_cols < 16:
            buf[starts] = np.uint8(0x90 | n_cols)
        else:
            buf[starts] = 0xDC
            _put(buf, starts + 1, np.full(n, n_cols, dtype=">u2"))
        starts += header_len
        for col in encoded:
            col.write(buf, starts)
            starts += col.lengths

    return row_len, write


def split(buf: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    """One bytes object per row (what a Redis client needs); one Python object per row, not per value."""
    raw = buf.tobytes()
    bounds = offsets.tolist()
    return [raw[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def _put(buf: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Write fixed-width big-endian `values` (one per row) at byte offsets `at`."""
    width = values.dtype.itemsize
    if len(at) == 0:
        return
    as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(-1, width)
    buf[at[:, None] + np.arange(width)] = as_bytes


def _encode_column(s: pl.Series) -> _Column:
    dtype = s.dtype
    if dtype == pl.Boolean:
        return _encode_bool(s)
    if dtype == pl.UInt64 and (s.max() or 0) > 2**63 - 1:
        return _encode_big_uint(s)
    if dtype.is_integer():
        return _encode_int(s.cast(pl.Int64))
    if dtype == pl.Float32:
        return _encode_float(s, ">f4", 0xCA)
    if dtype.is_float():
        return _encode_float(s.cast(pl.Float64), ">f8", 0xCB)
    if dtype == pl.String:
        return _encode_str(s)
    if isinstance(dtype, pl.Datetime):
        return _encode_int(s.dt.convert_time_zone("UTC").dt.epoch("us") if dtype.time_zone else s.dt.epoch("us"))
    if dtype == pl.Date:
        return _encode_int(s.dt.epoch("d"))
    if isinstance(dtype, pl.Array | pl.List) and dtype.inner == pl.Float32:
        return _encode_f32_vector(s)
    if isinstance(dtype, pl.List | pl.Array) and dtype.inner == pl.String:
        return _encode_str_list(s)
    raise TypeError(f"column {s.name!r}: dtype {dtype} has no online encoding (see docs/online-key-spec.md)")


def _nulls(s: pl.Series) -> np.ndarray:
    return s.is_null().to_numpy()


def _encode_bool(s: pl.Series) -> _Column:
    null = _nulls(s)
    byte = np.where(null, NIL, np.where(s.fill_null(False).to_numpy(), TRUE, FALSE)).astype(np.uint8)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts] = byte

    return _Column(np.ones(len(s), dtype=np.int64), write)


# (header byte, lower bound, upper bound, payload dtype) for every integer form but the fixints.
_INT_FORMS = [
    (0xCC, 128, 255, ">u1"),
    (0xCD, 256, 65535, ">u2"),
    (0xCE, 65536, 2**32 - 1, ">u4"),
    (0xCF, 2**32, 2**63 - 1, ">u8"),
    (0xD0, -128, -33, ">i1"),
    (0xD1, -32768, -129, ">i2"),
    (0xD2, -(2**31), -32769, ">i4"),
    (0xD3, -(2**63), -(2**31) - 1, ">i8"),
]


def _encode_int(s: pl.Series) -> _Column:
    null = _nulls(s)
    v = s.fill_null(0).to_numpy().astype(np.int64, copy=False)
    fix = ~null & (v >= -32) & (v <= 127)
    lengths = np.ones(len(v), dtype=np.int64)
    forms = []
    for head, lo, hi, fmt in _INT_FORMS:
        mask = ~null & (v >= lo) & (v <= hi)
        if mask.any():
            lengths[mask] = 1 + np.dtype(fmt).itemsize
            forms.append((head, mask, fmt))

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts[null]] = NIL
        buf[starts[fix]] = v[fix].astype(np.int8).view(np.uint8)
        for head, mask, fmt in forms:
            at = starts[mask]
            buf[at] = head
            _put(buf, at + 1, v[mask].astype(fmt))

    return _Column(lengths, write)


def _encode_big_uint(s: pl.Series) -> _Column:
    """UInt64 columns with values beyond int64: those take the uint 64 form, the rest the usual ones."""
    big = (s >= 2**63).fill_null(False).to_numpy()
    small = _encode_int(s.set(pl.Series(big), 0).cast(pl.Int64))
    v = s.fill_null(0).to_numpy().astype(np.uint64)
    lengths = np.where(big, 9, small.lengths)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        small.write(buf, starts)  # rows that are big get overwritten below
        at = starts[big]
        buf[at] = 0xCF
        _put(buf, at + 1, v[big].astype(">u8"))

    return _Column(lengths.astype(np.int64), write)


def _encode_float(s: pl.Series, fmt: str, head: int) -> _Column:
    null = _nulls(s)
    v = s.fill_null(0).to_numpy()
    width = np.dtype(fmt).itemsize
    lengths = np.where(null, 1, 1 + width).astype(np.int64)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts[null]] = NIL
        at = starts[~null]
        buf[at] = head
        _put(buf, at + 1, v[~null].astype(fmt))

    return _Column(lengths, write)


def _str_headers(byte_len: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, int, str | None]]]:
    """Header length per string and, per header form, (mask, first byte, length dtype)."""
    hlen = np.select([byte_len < 32, byte_len < 256, byte_len < 65536], [1, 2, 3], 5).astype(np.int64)
    forms: list[tuple[np.ndarray, int, str | None]] = [
        (byte_len < 32, 0xA0, None),
        ((byte_len >= 32) & (byte_len < 256), 0xD9, ">u1"),
        ((byte_len >= 256) & (byte_len < 65536), 0xDA, ">u2"),
        (byte_len >= 65536, 0xDB, ">u4"),
    ]
    return hlen, forms


def _copy_payload(buf: np.ndarray, dst_starts: np.ndarray, data: np.ndarray, lens: np.ndarray) -> None:
    """Copy consecutive chunks of `data` (chunk i has `lens[i]` bytes) to `dst_starts[i]`."""
    total = int(lens.sum())
    if total == 0:
        return
    src_starts = np.zeros(len(lens), dtype=np.int64)
    np.cumsum(lens[:-1], out=src_starts[1:])
    idx = np.repeat(dst_starts - src_starts, lens) + np.arange(total, dtype=np.int64)
    buf[idx] = data


def _utf8(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Byte lengths and the concatenated UTF-8 bytes of a string series (nulls as empty)."""
    filled = s.fill_null("")
    byte_len = filled.str.len_bytes().to_numpy().astype(np.int64)
    joined = filled.str.join("").item() if len(filled) else ""
    return byte_len, np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)


def _str_writer(byte_len: np.ndarray, data: np.ndarray, null: np.ndarray):
    hlen, forms = _str_headers(byte_len)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts[null]] = NIL
        for mask, head, fmt in forms:
            mask = mask & ~null
            if not mask.any():
                continue
            at = starts[mask]
            if fmt is None:
                buf[at] = (head | byte_len[mask]).astype(np.uint8)
            else:
                buf[at] = head
                _put(buf, at + 1, byte_len[mask].astype(fmt))
        _copy_payload(buf, starts + hlen, data, byte_len)

    return hlen, write


def _encode_str(s: pl.Series) -> _Column:
    null = _nulls(s)
    byte_len, data = _utf8(s)
    hlen, write = _str_writer(byte_len, data, null)
    return _Column(np.where(null, 1, hlen + byte_len).astype(np.int64), write)


def _bin_header_len(n: np.ndarray) -> np.ndarray:
    return np.select([n < 256, n < 65536], [2, 3], 5).astype(np.int64)


def _encode_f32_vector(s: pl.Series) -> _Column:
    s = s.cast(pl.List(pl.Float32)) if isinstance(s.dtype, pl.Array) else s
    holes = int(s.list.eval(pl.element().is_null()).list.any().fill_null(False).sum())
    if holes:
        raise ValueError(f"column {s.name!r}: {holes} vectors contain a null element; a vector is null or whole")
    null = _nulls(s)
    nbytes = s.list.len().fill_null(0).to_numpy().astype(np.int64) * 4
    data = s.explode().drop_nulls().to_numpy().astype("<f4").view(np.uint8)
    hlen = _bin_header_len(nbytes)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts[null]] = NIL
        for head, mask, fmt in (
            (0xC4, nbytes < 256, ">u1"),
            (0xC5, (nbytes >= 256) & (nbytes < 65536), ">u2"),
            (0xC6, nbytes >= 65536, ">u4"),
        ):
            mask = mask & ~null
            at = starts[mask]
            buf[at] = head
            _put(buf, at + 1, nbytes[mask].astype(fmt))
        _copy_payload(buf, starts + hlen, data, np.where(null, 0, nbytes))

    return _Column(np.where(null, 1, hlen + nbytes).astype(np.int64), write)


def _encode_str_list(s: pl.Series) -> _Column:
    s = s.cast(pl.List(pl.String)) if isinstance(s.dtype, pl.Array) else s
    null = _nulls(s)
    counts = s.list.len().fill_null(0).to_numpy().astype(np.int64)
    # Elements of the non-empty lists, in row order (explode would turn an empty list into a null).
    flat = s.filter(pl.Series(counts > 0)).explode() if counts.any() else pl.Series([], dtype=pl.String)
    elem_null = _nulls(flat)
    elem_len, data = _utf8(flat)
    elem_hlen, write_elems = _str_writer(elem_len, data, elem_null)
    elem_total = np.where(elem_null, 1, elem_hlen + elem_len)
    arr_hlen = np.select([counts < 16, counts < 65536], [1, 3], 5).astype(np.int64)
    row_of = np.repeat(np.arange(len(s)), counts)
    payload = np.bincount(row_of, weights=elem_total, minlength=len(s)).astype(np.int64)

    def write(buf: np.ndarray, starts: np.ndarray) -> None:
        buf[starts[null]] = NIL
        ok = ~null
        small = ok & (counts < 16)
        buf[starts[small]] = (0x90 | counts[small]).astype(np.uint8)
        for head, mask, fmt in (
            (0xDC, ok & (counts >= 16) & (counts < 65536), ">u2"),
            (0xDD, ok & (counts >= 65536), ">u4"),
        ):
            buf[starts[mask]] = head
            _put(buf, starts[mask] + 1, counts[mask].astype(fmt))
        # Each element starts after its row's array header and the elements before it in that row.
        elem_off = np.zeros(len(elem_total), dtype=np.int64)
        np.cumsum(elem_total[:-1], out=elem_off[1:])
        first_of_row = np.zeros(len(s), dtype=np.int64)
        np.cumsum(counts[:-1], out=first_of_row[1:])
        within = elem_off - elem_off[first_of_row[row_of]] if len(row_of) else elem_off
        write_elems(buf, (starts + arr_hlen)[row_of] + within)

    return _Column(np.where(null, 1, arr_hlen + payload).astype(np.int64), write)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def value_converter(dtype: str) -> Callable[[Any], Any] | None:
    """How a decoded msgpack value becomes the Python value of a feature of `dtype` (None: as decoded)."""
    if dtype.startswith("Datetime"):
        return lambda v: None if v is None else _EPOCH + timedelta(microseconds=v)
    if dtype == "Date":
        return lambda v: None if v is None else date(1970, 1, 1) + timedelta(days=v)
    if dtype.startswith(("List(Float32", "Array(Float32")):
        return lambda v: None if v is None else np.frombuffer(v, dtype="<f4").tolist()
    return None
