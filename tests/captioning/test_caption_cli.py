"""hdetach caption's command-line errors."""

from __future__ import annotations

import pytest

from hdetach.experiments.cli import main


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    for argv in (
        ["caption", "train", str(tmp_path)],
        ["caption", "features", str(tmp_path)],
        [
            "caption",
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--images",
            "10",
            "--val",
            "5",
            "--test",
            "5",
        ],
        ["caption", "eval", str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hdetach caption: error:") and "\n" not in err, err


def test_a_missing_toolkit_is_named_before_any_work(split_file, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # import fails as if absent
    with pytest.raises(SystemExit) as e:
        main(["caption", "baseline", str(split_file.parent)])
    assert e.value.code == 2
    assert "pip install pycocoevalcap" in capsys.readouterr().err
