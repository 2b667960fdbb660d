"""Reviewers' labels of galaxies, kept durably in SQLite under the data directory.

Placeholder of the review core for the explorer branch: the same API, a simple store.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

LABELS = ("interesting", "not_interesting", "artefact")
COLUMNS = ("id", "plateifu", "label", "note", "reviewer", "time", "model", "model_id", "score")


class LabelError(ValueError):
    """A label that cannot be stored (unknown label, empty plate-IFU or reviewer)."""


def labels_path(data_dir: Path) -> Path:
    """``data_dir / "labels" / "labels.sqlite"``."""
    return Path(data_dir) / "labels" / "labels.sqlite"


def default_reviewer() -> str:
    """``$MANGA_REVIEWER``, else the operating-system user."""
    return os.environ.get("MANGA_REVIEWER") or getpass.getuser()


class LabelStore:
    """Append-only table of labels; every `add` is committed before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "plateifu TEXT NOT NULL, label TEXT NOT NULL, note TEXT NOT NULL, "
                "reviewer TEXT NOT NULL, time TEXT NOT NULL, model TEXT NOT NULL, "
                "model_id TEXT NOT NULL, score REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def add(self, plateifu, label, note, reviewer, model, model_id, score) -> dict:
        """Store one label; the stored row."""
        if label not in LABELS:
            raise LabelError(f"label {label!r} is not one of {', '.join(LABELS)}")
        if not str(plateifu).strip():
            raise LabelError("a label needs a plate-IFU")
        if not str(reviewer).strip():
            raise LabelError("a label needs a reviewer's name")
        row = {
            "plateifu": str(plateifu),
            "label": label,
            "note": str(note or ""),
            "reviewer": str(reviewer),
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "model": str(model or ""),
            "model_id": str(model_id or ""),
            "score": None if score is None else float(score),
        }
        with self._lock, self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO labels (plateifu, label, note, reviewer, time, model, model_id, "
                "score) VALUES (:plateifu, :label, :note, :reviewer, :time, :model, :model_id, "
                ":score)",
                row,
            )
            row["id"] = cursor.lastrowid
        return {name: row[name] for name in COLUMNS}

    def table(self) -> pd.DataFrame:
        """Every label, oldest first."""
        with self._connect() as connection:
            table = pd.read_sql_query(
                f"SELECT {', '.join(COLUMNS)} FROM labels ORDER BY id", connection
            )
        return table

    def current(self, reviewer=None) -> pd.DataFrame:
        """The latest label per (reviewer, plateifu), of one reviewer when given."""
        table = self.table()
        if reviewer is not None:
            table = table[table["reviewer"] == reviewer]
        return table.drop_duplicates(["reviewer", "plateifu"], keep="last").reset_index(drop=True)

    def version(self) -> str:
        """Changes whenever a label is added."""
        with self._connect() as connection:
            count, last = connection.execute("SELECT COUNT(*), MAX(id) FROM labels").fetchone()
        return f"{count}:{last}"
