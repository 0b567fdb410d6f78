"""Reading a W&B run file (`run-<id>.wandb`) back, to check what an offline run wrote.

wandb 0.31 no longer ships a Python reader; the file is its transaction log:
a 7-byte header (":W&B", magic 0xBEE1, version), then LevelDB-style records
in 32 KiB blocks (7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST),
each record a protobuf `wandb.proto.wandb_internal_pb2.Record`. (CRCs are not checked:
a torn record fails to parse.)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        body = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        parts += body
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def history(path: Path) -> list[dict]:
    """Every logged row: {"_step": N, "<key>": value, ...}."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows
