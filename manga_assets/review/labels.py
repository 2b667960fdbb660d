"""Reviewers' labels, kept in a SQLite file in the data directory.

Each label records the plate-IFU, the label (`LABELS`), a free note, the reviewer, the time
(ISO 8601, UTC), the model whose list the reviewer was looking at with its ``model_id``, and
the score seen. Labels are keyed by plate-IFU: retraining a model changes its ``model_id`` and
scores, never which galaxy a label is about, so no label is lost to a retraining. They are only
ever appended; a reviewer who changes their mind adds a new label, and the latest counts
(`LabelStore.current`). Reviewers are kept apart: each one's current labels are their own.

Durability: the file is in WAL mode with ``synchronous=FULL``, so a label is on disk when
`LabelStore.add` returns, and a process killed (SIGKILL) at any point leaves either the whole
row or none. Each call opens its own connection, so one store may serve many threads.
"""

from __future__ import annotations

import getpass
import math
import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

LABELS = ("interesting", "not_interesting", "artefact")
REVIEWER_ENV = "MANGA_REVIEWER"
COLUMNS = ("id", "plateifu", "label", "note", "reviewer", "time", "model", "model_id", "score")
MAX_NOTE = 10_000
MAX_REVIEWER = 100
# Seconds a writer waits for another writer's lock before giving up.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plateifu TEXT NOT NULL,
    label TEXT NOT NULL,
    note TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    time TEXT NOT NULL,
    model TEXT NOT NULL,
    model_id TEXT,
    score REAL
);
CREATE INDEX IF NOT EXISTS labels_by_reviewer ON labels (reviewer, plateifu, id);
"""


class LabelError(ValueError):
    """A label that cannot be stored; the message says what is wrong and what to do."""


def labels_path(data_dir: Path) -> Path:
    """Where a data directory keeps its labels: ``data_dir/labels/labels.sqlite``."""
    return Path(data_dir) / "labels" / "labels.sqlite"


def validate_reviewer(reviewer: str | None) -> str:
    """The reviewer's name, stripped; `LabelError` if empty, too long or unprintable."""
    name = (reviewer or "").strip()
    if not name:
        raise LabelError(
            f"no reviewer name: pass --reviewer NAME or set {REVIEWER_ENV}, so that each "
            f"reviewer's labels are kept apart"
        )
    if len(name) > MAX_REVIEWER or not name.isprintable():
        raise LabelError(
            f"reviewer name {name[:MAX_REVIEWER]!r} must be printable and at most "
            f"{MAX_REVIEWER} characters; pass another --reviewer"
        )
    return name


def default_reviewer(reviewer: str | None = None) -> str:
    """The reviewer: ``reviewer`` if given (``--reviewer``), else ``$MANGA_REVIEWER``, else the
    operating-system user; validated (`validate_reviewer`)."""
    if reviewer is None or not reviewer.strip():
        reviewer = os.environ.get(REVIEWER_ENV, "").strip() or None
    if reviewer is None:
        try:
            reviewer = getpass.getuser()
        except (KeyError, OSError):  # no user name for this uid (a bare container)
            reviewer = None
    return validate_reviewer(reviewer)


def validate_plateifu(plateifu: str, known: set[str] | None = None) -> str:
    """``plateifu`` if it is a plate-IFU (``8485-1901``) and, given ``known``, one of them."""
    from manga_assets.sas.paths import PlateIFU

    text = str(plateifu).strip() if plateifu is not None else ""
    try:
        PlateIFU.parse(text)
    except ValueError:
        raise LabelError(
            f"{plateifu!r} is not a plate-IFU; give one as PLATE-IFUDESIGN, e.g. '8485-1901'"
        ) from None
    if known is not None and text not in known:
        raise LabelError(
            f"galaxy {text} is not in this data directory's sample; label a galaxy of the list"
        )
    return text


def _validate(
    plateifu: str, label: str, note: str, reviewer: str, model: str, score: float | None
) -> tuple[str, str, str, str, str, float | None]:
    if label not in LABELS:
        raise LabelError(f"label {label!r} is not one of {', '.join(LABELS)}; choose one of them")
    plateifu = validate_plateifu(plateifu)
    reviewer = validate_reviewer(reviewer)
    note = "" if note is None else note
    if not isinstance(note, str):
        raise LabelError(f"the note must be text, got {type(note).__name__}")
    if len(note) > MAX_NOTE:
        raise LabelError(f"the note has {len(note)} characters; shorten it to {MAX_NOTE}")
    if not model or not str(model).strip():
        raise LabelError("no model named: say which model's list the label was made on (ae, vae)")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise LabelError(
                f"score {score!r} is not a number; pass the score seen, or none"
            ) from None
        if not math.isfinite(score):
            raise LabelError(f"score {score} is not finite; pass the score seen, or none")
    return plateifu, label, note, reviewer, str(model).strip(), score


class LabelStore:
    """The labels of one data directory (a SQLite file, created if absent)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            # WAL persists in the file; synchronous is per connection (set in _connect).
            connection.execute("PRAGMA journal_mode=WAL")
            with connection:
                connection.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def add(
        self,
        plateifu: str,
        label: str,
        note: str,
        reviewer: str,
        model: str,
        model_id: str | None,
        score: float | None,
    ) -> dict:
        """Store one label durably and return the stored row.

        Raises
        ------
        LabelError
            If the label, plate-IFU, reviewer, note, model or score is not valid (nothing is
            stored then).
        """
        plateifu, label, note, reviewer, model, score = _validate(
            plateifu, label, note, reviewer, model, score
        )
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        row = (plateifu, label, note, reviewer, time, model,
               None if model_id is None else str(model_id), score)  # fmt: skip
        with closing(self._connect()) as connection, connection:
            cursor = connection.execute(
                "INSERT INTO labels (plateifu, label, note, reviewer, time, model, model_id, "
                "score) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            identifier = cursor.lastrowid
        return dict(zip(COLUMNS, (identifier, *row), strict=True))

    def table(self) -> pd.DataFrame:
        """Every label, oldest first."""
        with closing(self._connect()) as connection:
            rows = connection.execute(
                f"SELECT {', '.join(COLUMNS)} FROM labels ORDER BY id"
            ).fetchall()
        return _frame(rows)

    def current(self, reviewer: str | None = None) -> pd.DataFrame:
        """The latest label of each (reviewer, plate-IFU); only ``reviewer``'s if given."""
        query = (
            f"SELECT {', '.join(COLUMNS)} FROM labels WHERE id IN "
            "(SELECT MAX(id) FROM labels {where} GROUP BY reviewer, plateifu) ORDER BY id"
        )
        with closing(self._connect()) as connection:
            if reviewer is None:
                rows = connection.execute(query.format(where="")).fetchall()
            else:
                name = validate_reviewer(reviewer)
                rows = connection.execute(
                    query.format(where="WHERE reviewer = ?"), (name,)
                ).fetchall()
        return _frame(rows)

    def version(self) -> str:
        """``"{count}:{largest id}"``: changes whenever a label is added (labels are only
        appended)."""
        with closing(self._connect()) as connection:
            count, largest = connection.execute("SELECT COUNT(*), MAX(id) FROM labels").fetchone()
        return f"{count}:{largest or 0}"


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["id"] = frame["id"].astype("int64")
    frame["score"] = frame["score"].astype("float64")
    for column in ("plateifu", "label", "note", "reviewer", "time", "model", "model_id"):
        frame[column] = frame[column].astype(object)
    return frame
