"""`reid embed` and `reid eval` on the shipped model, including a bad image in the batch."""

from pathlib import Path

import numpy as np

from retail_reid.cli import main

SAMPLE = Path("sample/grocery")


def test_embed_a_list_file_in_input_order(tmp_path):
    paths = sorted((SAMPLE / "val").glob("*/*.jpg"))[:4]
    lst = tmp_path / "list.txt"
    lst.write_text("\ufeff" + "\n".join(f"{p}, 7, 1" for p in paths) + "\n\n")
    out = tmp_path / "e.npy"
    assert main(["embed", "--list", str(lst), "--root", ".", "--out", str(out), "--quiet"]) == 0
    emb = np.load(out)
    assert emb.shape[0] == 4 and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert out.with_suffix(".paths.txt").read_text().splitlines() == [str(p) for p in paths]
    single = tmp_path / "one.npy"
    assert main(["embed", str(paths[2]), "--out", str(single), "--quiet"]) == 0
    assert np.allclose(np.load(single)[0], emb[2], atol=1e-5)


def test_a_bad_image_fails_the_run_unless_skipped(tmp_path, capsys):
    good = sorted((SAMPLE / "val").glob("*/*.jpg"))[:2]
    bad = tmp_path / "zero.jpg"
    bad.write_bytes(b"")
    out = tmp_path / "e.npy"
    args = ["embed", str(good[0]), str(bad), str(good[1]), "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "empty" in err and not out.exists()
    assert err.splitlines()[-1] == (
        "reid embed: error: 1 of 3 images could not be read (listed above); nothing written "
        "(--skip-bad embeds the rest)"
    )
    assert main([*args, "--skip-bad"]) == 1  # still non-zero: something was skipped
    assert np.load(out).shape[0] == 2
    assert out.with_suffix(".paths.txt").read_text().splitlines() == [str(good[0]), str(good[1])]


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["embed", "--list", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "missing.txt: list file not found" in err and "Traceback" not in err
    assert main(["embed", "--model", str(tmp_path / "none.onnx"), "a.jpg", "--out", str(tmp_path / "x.npy")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_eval_reports_every_protocol(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "--gallery",
                str(SAMPLE / "train"),
                "--queries",
                str(SAMPLE / "val"),
                "--iconic",
                str(SAMPLE / "iconic"),
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    import json

    r = next(iter(json.loads(report.read_text()).values()))
    assert set(r) == {"within_queries", "gallery_query_centroid", "gallery_query_nearest", "iconic_query"}
    assert r["gallery_query_centroid"]["recall_at_1"] > 0.5  # 12 SKUs: chance is about 0.08
    assert 0.5 < r["gallery_query_nearest"]["roc_auc"] <= 1
