"""The CLI's side of `mariposa export` (mariposa/cli/exporting.py): where the daemon's answer goes."""

from __future__ import annotations

import stat

import click
import pytest

from mariposa.cli import exporting

RESULT = {"files": {"demo.json": "{}\n", "demo-nightly.json": "{\"a\": 1}\n"}, "report": "conversion report\n1 mapped"}


def test_several_files_on_stdout_each_after_a_header(capsys):
    assert exporting.write(RESULT, None) == ["demo.json", "demo-nightly.json"]
    assert capsys.readouterr().out == "==> demo.json <==\n{}\n==> demo-nightly.json <==\n{\"a\": 1}\n"


def test_one_file_on_stdout_as_it_is(capsys):
    exporting.write({"files": {"a.yaml": "x: 1\n"}, "report": ""}, None)
    assert capsys.readouterr().out == "x: 1\n"


def test_out_dir_is_made_with_the_files_and_the_report(tmp_path):
    out = tmp_path / "new" / "dir"
    written = exporting.write(RESULT, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["demo-nightly.json", "demo.json", "report.txt"]
    assert (out / "report.txt").read_text() == "conversion report\n1 mapped\n"
    assert len(written) == 3


def test_secret_files_are_private_and_names_never_leave_the_dir(tmp_path):
    exporting.write({"files": {"compose.yaml": "", "secrets/key": "v"}, "report": "", "with_secret_values": True},
                    str(tmp_path))
    assert stat.S_IMODE((tmp_path / "secrets" / "key").stat().st_mode) == 0o600
    with pytest.raises(click.ClickException, match="outside"):
        exporting.write({"files": {"ok.yaml": "x", "../escape": "x"}, "report": ""}, str(tmp_path / "d"))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "d").exists()  # nothing written
