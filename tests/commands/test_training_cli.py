"""`napari-seal train` on the real bundled her2st section, and its bad-input paths."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from napari_seal.cli import main


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bundled():
    from napari_seal.io.hest import bundled_sample_path

    return str(bundled_sample_path())


def test_train_cli_on_real_section_then_resume(bundled, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        bundled,
        "--out",
        str(out),
        "--encoder",
        "test-vit",
        "--preset",
        "cpu-smoke",
        "--max-steps",
        "2",
        "--include-genes",
        "GAPDH,ACTB",
        "--device",
        "cpu",
    ]
    assert main(["train", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "cpu-smoke"
    assert cfg["max_steps"] == 2
    assert cfg["include_genes"] == ["GAPDH", "ACTB"]
    info = json.loads((out / "run.json").read_text())
    assert info["samples"][0]["name"] == "her2st_C2"
    assert info["n_train_spots"] == 187
    assert info["encoder"]["tile_px"] == 64
    steps = [
        json.loads(x)
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if '"StepEvent"' in x
    ]
    assert [s["step"] for s in steps] == [1, 2]
    from napari_seal.training.runs import load_run

    run = load_run(out)
    assert {"ERBB2", "GAPDH", "ACTB"} <= set(run.panel.genes)
    # --resume with more steps continues from the saved step
    assert (
        main(
            [
                "train",
                bundled,
                "--out",
                str(out),
                "--resume",
                "--max-steps",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    steps = [
        json.loads(x)
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if '"StepEvent"' in x
    ]
    assert [s["step"] for s in steps] == [1, 2, 3]


def test_train_cli_bad_inputs_exit_2_with_one_line(bundled, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            bundled,
            "--out",
            str(out),
            "--encoder",
            "test-vit",
            "--preset",
            "cpu-smoke",
            "--batch-size",
            "500",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "only 187 training spots for a batch of 500" in err
    assert "--batch-size" in err
    assert "Traceback" not in err
    assert not out.exists()
    code = main(
        [
            "train",
            bundled,
            "--out",
            str(out),
            "--encoder",
            "no-such-net",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "no-such-net" in err
    assert "test-vit" in err
    code = main(
        [
            "train",
            bundled,
            "--out",
            str(out),
            "--encoder",
            "test-vit",
            "--preset",
            "cpu-smoke",
            "--include-genes",
            "ERBB2,KRTT19",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "KRTT19" in err
    assert "did you mean" in err
    assert not out.exists()


def test_first_ctrl_c_requests_a_stop_second_interrupts():
    from napari_seal.commands.train import _graceful_sigint

    with _graceful_sigint() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
