import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from manga_assets.review.labels import (
    LABELS,
    LabelError,
    LabelStore,
    default_reviewer,
    labels_path,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_label_survives_a_sigkill_of_the_process_that_added_it(tmp_path):
    path = labels_path(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from manga_assets.review.labels import LabelStore
        store = LabelStore(Path({str(path)!r}))
        row = store.add("8485-1901", "interesting", "a ring", "ana", "ae", "m1", 3.2)
        print(row["id"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    table = LabelStore(path).table()
    assert table[["plateifu", "label", "note", "reviewer", "model_id"]].values.tolist() == [
        ["8485-1901", "interesting", "a ring", "ana", "m1"]
    ]
    assert table["id"].tolist() == [int(result.stdout.split()[0])]
    assert table["score"].tolist() == [3.2]


def test_reviewers_are_kept_apart_and_the_latest_label_counts(tmp_path):
    store = LabelStore(labels_path(tmp_path))
    store.add("8485-1901", "interesting", "", "ana", "ae", "m1", 1.0)
    store.add("8485-1902", "artefact", "", "ana", "ae", "m1", 2.0)
    store.add("8485-1901", "not_interesting", "seen better", "ben", "vae", None, None)
    store.add("8485-1901", "not_interesting", "changed my mind", "ana", "ae", "m2", 1.5)
    ana = store.current("ana").set_index("plateifu")["label"].to_dict()
    ben = store.current("ben").set_index("plateifu")["label"].to_dict()
    assert ana == {"8485-1901": "not_interesting", "8485-1902": "artefact"}
    assert ben == {"8485-1901": "not_interesting"}
    assert len(store.current()) == 3 and len(store.table()) == 4


def test_a_label_outlives_a_retrained_model(tmp_path):
    store = LabelStore(labels_path(tmp_path))
    store.add("8485-1901", "interesting", "", "ana", "ae", "model-before", 2.0)
    # A retrained model has another id; the label is about the galaxy, and stays.
    reopened = LabelStore(labels_path(tmp_path))
    assert reopened.current("ana")["plateifu"].tolist() == ["8485-1901"]
    assert reopened.current("ana")["model_id"].tolist() == ["model-before"]


@pytest.mark.parametrize(
    ("plateifu", "label", "reviewer", "said"),
    [
        ("8485-1901", "boring", "ana", "not one of"),
        ("not-a-galaxy", "interesting", "ana", "not a plate-IFU"),
        ("8485-1901", "interesting", "  ", "no reviewer"),
        ("8485-1901", "interesting", "a\nb", "printable"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(tmp_path, plateifu, label, reviewer, said):
    store = LabelStore(labels_path(tmp_path))
    before = store.version()
    with pytest.raises(LabelError, match=said):
        store.add(plateifu, label, "", reviewer, "ae", None, None)
    assert store.table().empty and store.version() == before


def test_the_version_changes_with_every_label(tmp_path):
    store = LabelStore(labels_path(tmp_path))
    versions = [store.version()]
    for label in LABELS:
        store.add("8485-1901", label, "", "ana", "ae", None, None)
        versions.append(store.version())
    assert len(set(versions)) == len(versions)


def test_the_reviewer_comes_from_the_flag_then_the_environment_then_the_user(monkeypatch):
    monkeypatch.setenv("MANGA_REVIEWER", "env-name")
    assert default_reviewer("flag-name") == "flag-name"
    assert default_reviewer() == "env-name"
    monkeypatch.delenv("MANGA_REVIEWER")
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    assert default_reviewer() == "os-user"
    monkeypatch.setattr("getpass.getuser", lambda: "")
    with pytest.raises(LabelError, match="--reviewer"):
        default_reviewer()
