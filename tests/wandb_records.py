"""Read an offline W&B run's ``.wandb`` transaction log (tests only; wandb ships no reader for it).

The file is a leveldb-style log: a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte header
(crc32 ``I``, length ``H``, type ``B``: 1 full, 2 first, 3 middle, 4 last) carrying serialized ``Record`` protobufs.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import wandb
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: Path) -> list:
    # run.finish() returns once the exit record is handled, but the service may still hold the log's last
    # chunks in its write buffer (a CI run once lacked the final history row); shutting the service down
    # closes the stream and flushes the file, as the atexit hook does when a `zoo` process ends.
    wandb.teardown()
    data = Path(path).read_bytes()
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:          # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history_keys(path: Path) -> set[str]:
    return {item.key or ".".join(item.nested_key) for r in read_records(path) if r.HasField("history")
            for item in r.history.item}


def config_values(path: Path) -> dict:
    values = {}
    for r in read_records(path):
        if r.HasField("config"):
            for item in r.config.update:
                values[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return values
