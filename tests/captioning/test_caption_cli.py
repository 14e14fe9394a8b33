"""hdetach caption's command-line errors."""

from __future__ import annotations

import pytest

from hdetach.cli import main


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
