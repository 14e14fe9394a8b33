"""A run folder's files through ``RunFolder``: what is written reads back, a resume drops
the records past its checkpoint, and a damaged file is an error naming folder and file."""

import json
import math
import re

import pytest

from hdetach.experiments.config import ConfigError
from hdetach.experiments.run.files import to_json
from hdetach.experiments.run.folder import RunFolder, RunFolderError


def _record(step: int, **extra) -> dict:
    return {"step": step, "epoch": step / 10, "val": {"acc": 0.5}, "best": {}, **extra}


def test_what_is_written_reads_back(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    config = {"task": "copy", "epochs": 3, "lr": 1e-3}
    folder.write_config(config)
    folder.write_summary({"status": "finished", "best_val": math.nan})
    folder.write_transfer({"T": [20, 50], "acc": [0.5, 0.25]})
    records = [_record(10), _record(20, gradients=[{"step": 15, "lstm": {"ratio": 2.0}}])]
    for record in records:
        folder.append_metrics(record)
    assert folder.holds_run() and folder.read_config() == config
    assert folder.read_summary() == {"status": "finished", "best_val": None}  # standard JSON
    assert folder.read_transfer() == {"T": [20, 50], "acc": [0.5, 0.25]}
    assert folder.read_metrics() == records
    assert folder.steps_recorded() == 20
    assert folder.status() == "finished" and folder.trained_epochs() == 3
    assert RunFolder.find(tmp_path) == [folder.path] == RunFolder.find(folder.path)


def test_a_folder_without_files_reads_as_nothing_written(tmp_path):
    folder = RunFolder(tmp_path / "missing")
    assert not folder.holds_run() and RunFolder.find(tmp_path) == []
    assert folder.read_config() is folder.read_summary() is folder.read_transfer() is None
    assert folder.read_metrics() == [] and folder.steps_recorded() == 0
    assert folder.status() is None and folder.holder() is None
    assert folder.trained_epochs() == math.inf  # never trained again on a guess
    assert folder.last_checkpoint.parent == folder.best_checkpoint.parent == folder.path


def test_a_resume_drops_the_records_past_its_checkpoint(tmp_path):
    folder = RunFolder(tmp_path)
    for step in (10, 20, 30):
        folder.append_metrics(_record(step))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    folder.truncate_metrics(20)
    assert [r["step"] for r in folder.read_metrics()] == [10, 20]
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines[:2]  # as written
    folder.truncate_metrics(0)
    assert folder.read_metrics() == []
    RunFolder(tmp_path / "fresh").truncate_metrics(5)  # nothing recorded yet: nothing to do


@pytest.mark.parametrize("name", ["config.json", "summary.json", "transfer.json"])
@pytest.mark.parametrize("text", ['{"status": "fini', "[1, 2]"])
def test_a_damaged_json_file_is_an_error_naming_the_folder_and_the_file(tmp_path, name, text):
    folder = RunFolder(tmp_path)
    (tmp_path / name).write_text(text)
    read = {
        "config.json": folder.read_config,
        "summary.json": folder.read_summary,
        "transfer.json": folder.read_transfer,
    }[name]
    where = re.escape(str(tmp_path))
    with pytest.raises(RunFolderError, match=f"^{where}: {name} is not") as error:
        read()
    assert isinstance(error.value, ConfigError)  # the CLI's one-line error


def test_a_bad_metrics_line_is_an_error_naming_its_line(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_metrics(_record(10))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"loss": 0.5, "iteration": 3}\n{"step": 3')  # another program's; a torn one
    where = re.escape(str(tmp_path))
    with pytest.raises(RunFolderError, match=f"^{where}: metrics.jsonl line 2 is not"):
        folder.read_metrics()
    with pytest.raises(RunFolderError, match="metrics.jsonl line 2"):
        folder.truncate_metrics(10)  # a damaged line before the last is not a kill's
    assert folder.steps_recorded() == 10  # while a run trains: lines not complete are skipped


def test_a_resume_drops_a_last_line_cut_short_by_a_kill(tmp_path):
    """A kill while a record was appended leaves a last line without its newline, past the
    checkpoint the run resumes from: the resume drops it instead of refusing the folder."""
    folder = RunFolder(tmp_path)
    for step in (10, 20):
        folder.append_metrics(_record(step))
    whole = (tmp_path / "metrics.jsonl").read_text()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(to_json(_record(30))[:25])
    folder.truncate_metrics(20)
    assert (tmp_path / "metrics.jsonl").read_text() == whole
    # a complete last line that is not a record is damage, not a kill: still an error
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write("not a record\n")
    with pytest.raises(RunFolderError, match="metrics.jsonl line 3 is not"):
        folder.truncate_metrics(20)


def test_an_unreadable_summary_leaves_the_status_unknown(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "summary.json").write_text('{"status": "fini')
    (tmp_path / "config.json").write_text("{")
    assert folder.status() is None and folder.trained_epochs() == math.inf


def test_relocate_records_the_folder_as_the_run_dir(tmp_path):
    folder = RunFolder(tmp_path / "here")
    folder.create()
    folder.write_config({"task": "copy", "run_dir": "/elsewhere"})
    folder.relocate()  # no summary yet: only the config
    assert folder.read_config()["run_dir"] == str(folder.path)
    assert not (folder.path / "summary.json").exists()
    folder.write_summary({"status": "finished", "run_dir": "/elsewhere"})
    folder.relocate()
    assert json.loads((folder.path / "summary.json").read_text())["run_dir"] == str(folder.path)


def test_the_log_appends_and_the_summary_can_be_removed(tmp_path):
    folder = RunFolder(tmp_path / "new")
    for line in ("one\n", "two\n"):
        with folder.open_log() as log:  # creates the folder
            log.write(line)
    assert (folder.path / "train.log").read_text() == "one\ntwo\n"
    folder.write_summary({"status": "finished"})
    folder.remove_summary()
    folder.remove_summary()  # none: nothing to do
    assert folder.read_summary() is None
