"""The figure in metrics/rollup.py's docstring, measured with the database file: a day of minute
rows of 20 instances (ids as the daemon makes them), the file's growth per row."""

from __future__ import annotations

import os
import uuid

from mariposa.store import metrics as metric_store
from mariposa.store.db import Store

INSTANCES, MINUTES = 20, 1440


def file_size(store: Store) -> int:
    store.db.conn.execute("VACUUM")
    store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(store.path)


def test_a_row_costs_about_209_bytes_and_an_instance_day_about_300_kb(tmp_path):
    store = Store(tmp_path / "m.db")
    empty = file_size(store)
    ids = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(INSTANCES)]
    start = 1_800_000_000 // 60 * 60
    for m in range(MINUTES):
        minute = start + 60 * m
        rows = [(minute, i, p, "web", 6, 12.345, 12_345_678, 23_456_789, 536_870_912, 123.4, 456.7, 0.0, 4096.0)
                for i, p in ids]
        store.call_sync(metric_store.write_minutes, rows, minute + 59)
    assert store.call_sync(metric_store.count) == INSTANCES * MINUTES  # nothing a day old yet
    per_row = (file_size(store) - empty) / (INSTANCES * MINUTES)
    print(f"{per_row:.0f} bytes a row, {per_row * MINUTES / 1000:.0f} KB an instance-day")
    assert 150 < per_row < 260
    store.close()
