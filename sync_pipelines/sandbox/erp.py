"""The legacy ERP: it cannot serve an API, it only drops `customers.csv` into a folder."""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .data import World

CSV_COLUMNS = ("customer_no", "contact_name", "email_address", "phone", "company", "modified")


def write_csv(world: World, csv_dir: Path) -> Path:
    """Write the export atomically (readers never see half a file); returns its path."""
    table = world.tables["legacy_erp/customers"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in np.flatnonzero(~table.deleted).tolist():  # a record deleted in the ERP drops out of its export
        fields = table.fields(row)
        modified = datetime.fromtimestamp(int(table.modified[row]) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        writer.writerow([*("" if fields.get(c) is None else fields[c] for c in CSV_COLUMNS[:-1]), modified])
    csv_dir.mkdir(parents=True, exist_ok=True)
    path = csv_dir / "customers.csv"
    partial = csv_dir / ".customers.csv.partial"
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, path)
    return path
