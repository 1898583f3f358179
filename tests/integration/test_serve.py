"""``cellbench serve``: the real server on a loopback port, real HTTP requests.

A tiny unet is trained on synthetic images (seconds on a CPU); the server is
started as a subprocess (``cellbench serve --port <free port>``) with small
limits, so every refusal is cheap to provoke. Labels answered for an upload must
equal, array for array, what ``cellbench segment`` writes for the same file and
model (a TIFF tiled at ``--tile-size 128``, RGB and RGBA PNGs, a JPEG).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cellbench.cli import main
from cellbench.config import ModelConfig
from cellbench.datasets.options import SyntheticOptions
from cellbench.io import read_labels
from cellbench.segment import output_names
from cellbench.synthetic import generate_image
from cellbench.train import train_model
from PIL import Image
from tiny_networks import TINY_NETWORK, write_tiny_dataset

httpx = pytest.importorskip("httpx", reason="the serve tests send requests with httpx")
pytest.importorskip("fastapi", reason="cellbench serve needs the 'serve' extra")

BIN = Path(sys.executable).parent
TILE = 128  # the test images (200 x 180) are segmented in tiles
LIMITS = ["--max-upload-mb", "1", "--max-megapixels", "0.05", "--tile-size", str(TILE)]
UNET = {
    **TINY_NETWORK,
    "epochs": 1,
    "samples_per_epoch": 2,
    "seed_threshold": [0.5],
    "mask_threshold": [0.5],
    "split_h": [0.0],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``cellbench serve ARGS --port P`` in a subprocess; returns it and its URL once healthy."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    handle = log.open("w")
    proc = subprocess.Popen(
        [str(BIN / "cellbench"), "serve", *args, "--port", str(port), "--threads", "1"],
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cellbench serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"cellbench serve did not answer /health within 120 s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Converted synthetic data, a split, a tiny trained unet and its test scores."""
    root = tmp_path_factory.mktemp("serve")
    converted, split_csv = write_tiny_dataset(
        root / "data" / "converted" / "synthetic",
        root / "data" / "splits" / "synthetic.csv",
        source="synthetic:fluorescent",
    )
    out = root / "results" / "models" / "synthetic" / "unet"
    cfg = ModelConfig("unet", "unet", UNET)
    train_model(cfg, "synthetic", converted, split_csv, out, seed=1, device="cpu", progress=False)
    scores = root / "results" / "scores" / "synthetic" / "unet"
    scores.mkdir(parents=True)
    summary = {"n_images": 1, "per_image_mean": {"mean_ap": 0.42, "f1@0.50": 0.61}}
    (scores / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="module")
def images(project: Path) -> dict[str, Path]:
    """One image in every upload type: 16-bit TIFF (tiled), RGB and RGBA PNG, JPEG."""
    folder = project / "uploads"
    folder.mkdir()
    spec = SyntheticOptions(height=200, width=180, n_cells=(8, 14), radius=(6, 9))
    grey, _ = generate_image(7, "fluorescent", spec)
    tifffile.imwrite(folder / "cells.tif", grey)
    grey8 = (grey / max(int(grey.max()), 1) * 255).astype(np.uint8)
    rgb = np.stack([grey8, grey8 // 2, grey8], axis=-1)
    Image.fromarray(rgb, "RGB").save(folder / "cells_rgb.png")
    rgba = np.concatenate([rgb, np.full(grey8.shape + (1,), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(folder / "cells_rgba.png")
    Image.fromarray(grey8).save(folder / "cells.jpg", quality=90)
    return {p.name: p for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def segmented(project: Path, images: dict[str, Path]) -> dict[str, np.ndarray]:
    """What ``cellbench segment`` writes for every upload image, same model, same tiles."""
    out = project / "segment_out"
    model_dir = project / "results" / "models" / "synthetic" / "unet"
    args = ["segment", "--model-dir", str(model_dir), "--out", str(out), "--device", "cpu"]
    code = main([*args, "--tile-size", str(TILE), *map(str, images.values())])
    assert code == 0
    names = output_names(list(images.values()))  # cells.tif and cells.jpg share a stem
    return {name: read_labels(out / names[path]) for name, path in images.items()}


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    """The served tiny unet, started in an empty working folder (which must stay empty)."""
    cwd = project / "server_cwd"
    cwd.mkdir()
    model_dir = project / "results" / "models" / "synthetic" / "unet"
    args = ["--model-dir", str(model_dir), "--device", "cpu", *LIMITS]
    proc, url = start_server(args, cwd, project / "server.log")
    yield url
    stop_server(proc)
    assert list(cwd.iterdir()) == [], "the server wrote into its working folder"


def post(url: str, path: Path, *, fmt: str = "json", **params: str) -> httpx.Response:
    files = {"file": (path.name, path.read_bytes())}
    return httpx.post(f"{url}/segment", params={"format": fmt, **params}, files=files, timeout=120)


# ----------------------------------------------------------------------------- tests
def test_health_model_card_and_docs(server: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == "unet"
    assert health["limits"]["max_upload_mb"] == 1.0
    card = httpx.get(f"{server}/model").json()
    assert card["family"] == "unet" and card["device"] == "cpu"
    assert set(card["thresholds"]) == {"seed_threshold", "mask_threshold", "split_h"}
    assert card["training"]["dataset"] == "synthetic" and card["training"]["n_train_images"] == 2
    assert card["scores"]["values"]["mean_ap"]["value"] == pytest.approx(0.42)
    assert card["options"]["encoder"] == "resnet18"
    assert "/segment" in httpx.get(f"{server}/openapi.json").json()["paths"]
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200
    # the docs page works offline: its script and style come from this server, not a CDN
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    for asset in ("/static-docs/swagger-ui-bundle.js", "/static-docs/swagger-ui.css"):
        assert asset in docs.text and httpx.get(f"{server}{asset}").status_code == 200
    page = httpx.get(f"{server}/")
    assert (
        page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    )
    assert "synthetic" in page.text and "0.420" in page.text
    for asset in ("static/serve.js", "static/serve.css"):
        assert httpx.get(f"{server}/{asset}").status_code == 200


@pytest.mark.parametrize("name", ["cells.tif", "cells_rgb.png", "cells_rgba.png", "cells.jpg"])
def test_labels_equal_cellbench_segment(server: str, images, segmented, name: str) -> None:
    answer = post(server, images[name], fmt="tiff")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/tiff"
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="{images[name].stem}_masks.tif"'
    )
    labels = tifffile.imread(io.BytesIO(answer.content))
    expected = segmented[name]
    assert labels.dtype == np.uint16 and labels.shape == expected.shape
    assert np.array_equal(labels, expected)
    assert int(answer.headers["x-cellbench-objects"]) == np.unique(expected[expected > 0]).size


def test_every_format_answers_and_decodes(server: str, images, segmented) -> None:
    from cellbench.export.formats import fill_roi

    path, expected = images["cells.tif"], segmented["cells.tif"]
    ids = np.unique(expected[expected > 0])
    assert ids.size > 0, "the tiny model found nothing: the comparisons would be empty"

    body = post(server, path, fmt="json", overlay="true").json()
    assert body["n_objects"] == ids.size and body["model"] == "unet"
    assert body["image"] == {
        "name": "cells",
        "width": 180,
        "height": 200,
        "channels": 1,
        "dtype": "uint16",
    }
    first = body["objects"][0]
    ys, xs = np.nonzero(expected == first["label"])
    assert first["area"] == ys.size
    assert first["centroid_x"] == pytest.approx(xs.mean(), abs=0.01)
    assert first["centroid_y"] == pytest.approx(ys.mean(), abs=0.01)
    assert {"decode_s", "segment_s", "encode_s", "total_s"} <= set(body["timings"])
    assert body["overlay_png"].startswith("data:image/png;base64,")

    rois = post(server, path, fmt="roi")
    assert rois.headers["content-type"] == "application/zip"
    import roifile

    with zipfile.ZipFile(io.BytesIO(rois.content)) as zf:
        names = sorted(zf.namelist())
        assert len(names) == ids.size
        roi = roifile.ImagejRoi.frombytes(zf.read(names[0]))
    assert np.array_equal(fill_roi(roi, expected.shape), expected == ids[0])

    geo = post(server, path, fmt="geojson")
    assert geo.headers["content-type"] == "application/geo+json"
    features = geo.json()["features"]
    assert [f["properties"]["label"] for f in features] == ids.tolist()
    assert features[0]["properties"]["measurements"]["area"] == int((expected == ids[0]).sum())

    png = post(server, path, fmt="png")
    assert png.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(png.content)))
    assert overlay.shape == (200, 180, 3)


def test_raw_body_upload(server: str, images, segmented) -> None:
    data = images["cells.tif"].read_bytes()
    answer = httpx.post(
        f"{server}/segment",
        params={"format": "tiff"},
        content=data,
        headers={"content-type": "application/octet-stream"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert np.array_equal(tifffile.imread(io.BytesIO(answer.content)), segmented["cells.tif"])


def test_concurrent_requests_are_served_one_model(server: str, images, segmented) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(server, images["cells.tif"], fmt="tiff"), range(6)))
    for answer in answers:
        assert answer.status_code == 200
        assert np.array_equal(tifffile.imread(io.BytesIO(answer.content)), segmented["cells.tif"])
    assert httpx.get(f"{server}/health").json()["waiting"] == 0


def _bad_uploads(tmp: Path, good: Path) -> list[tuple[str, dict, int, str]]:
    data = good.read_bytes()
    stack = tmp / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 40, 40), np.uint16), metadata={"axes": "ZYX"})
    big = tmp / "big.tif"
    tifffile.imwrite(big, np.zeros((300, 300), np.uint8))
    flat = tmp / "flat.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(flat)
    # memory bombs: small files that decode to about 300 MiB (tests/unit/test_serve_decode.py)
    samples = io.BytesIO()
    tifffile.imwrite(
        samples,
        np.zeros((1000, 1000, 300), np.uint8),
        compression="zlib",
        photometric="minisblack",
        planarconfig="contig",
    )
    pages = io.BytesIO()
    with tifffile.TiffWriter(pages) as tif:
        for _ in range(2000):
            tif.write(np.zeros((40000, 4), np.uint8), compression="zlib", metadata=None)
    return [
        ("empty", {"files": {"file": ("empty.tif", b"")}}, 415, "empty"),
        ("truncated TIFF", {"files": {"file": ("cut.tif", data[:3000])}}, 415, "decoded"),
        (
            "text named .png",
            {"files": {"file": ("notes.png", b"hello\n" * 10)}},
            415,
            "first bytes",
        ),
        (
            "too large",
            {"files": {"file": ("big.tif", b"II*\x00" + bytes(1_300_000))}},
            413,
            "1 MiB",
        ),
        (
            "wrong content type",
            {"content": b'{"image": 1}', "headers": {"content-type": "application/json"}},
            415,
            "content type",
        ),
        ("z-stack", {"files": {"file": ("stack.tif", stack.read_bytes())}}, 422, "stack"),
        ("too many pixels", {"files": {"file": ("big.tif", big.read_bytes())}}, 422, "megapixels"),
        ("no file field", {"files": {"image": ("a.tif", data)}}, 422, "'file'"),
        (
            "300 samples per pixel",
            {"files": {"file": ("samples.tif", samples.getvalue())}},
            422,
            "300 channels (samples per pixel; counted before decoding",
        ),
        (
            "2000 pages",
            {"files": {"file": ("pages.tif", pages.getvalue())}},
            422,
            "2000 pages, shape (2000, 40000, 4)",
        ),
    ]


def test_bad_uploads_get_4xx_with_a_message(server: str, images, tmp_path: Path) -> None:
    for what, kwargs, status, words in _bad_uploads(tmp_path, images["cells.tif"]):
        answer = httpx.post(f"{server}/segment", timeout=60, **kwargs)
        assert answer.status_code == status, (what, answer.status_code, answer.text)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and words in detail, (what, detail)
    unknown = httpx.post(f"{server}/segment", params={"format": "bmp"}, files={"file": b"x"})
    assert unknown.status_code == 422 and "tiff" in unknown.text
    assert httpx.get(f"{server}/health").status_code == 200
    assert post(server, images["cells.tif"], fmt="tiff").status_code == 200


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../etc/x.tif", "x"),
        ("..\\..\\Windows\\evil name;.tif", "evil_name"),
        ("/abs/path/.hidden.tif", "hidden"),
        ("../..", "upload"),
    ],
)
def test_path_in_the_upload_name_is_never_a_path(
    server: str, images, segmented, name: str, stem: str
) -> None:
    data = images["cells.tif"].read_bytes()
    answer = httpx.post(
        f"{server}/segment", params={"format": "tiff"}, files={"file": (name, data)}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"] == f'attachment; filename="{stem}_masks.tif"'
    assert np.array_equal(tifffile.imread(io.BytesIO(answer.content)), segmented["cells.tif"])
    body = httpx.post(f"{server}/segment", files={"file": (name, data)}, timeout=120).json()
    assert body["image"]["name"] == stem


def test_report_best_serves_the_winner(project: Path, repo_root: Path) -> None:
    args = [
        "--report-best",
        "synthetic",
        "--params",
        str(repo_root / "params.yaml"),
        "--results",
        str(project / "results"),
        "--models",
        "unet",
        "--device",
        "cpu",
    ]
    log = project / "report_best.log"
    proc, url = start_server(args, project, log)
    try:
        card = httpx.get(f"{url}/model").json()
        assert card["model"] == "unet" and card["scores"]["values"]["mean_ap"]["value"] == 0.42
    finally:
        stop_server(proc)
    assert "best model of synthetic: unet" in log.read_text()


def test_serve_refuses_a_bad_model_folder(tmp_path: Path, capsys) -> None:
    tmpdir = os.environ.get("TMPDIR")
    code = main(["serve", "--model-dir", str(tmp_path / "nothing"), "--port", str(free_port())])
    assert code == 2
    assert "no such folder" in capsys.readouterr().err
    # the private upload folder is gone, and TMPDIR is what it was (later temporaries work)
    assert os.environ.get("TMPDIR") == tmpdir
    code = main(["serve", "--model-dir", str(tmp_path), "--max-upload-mb", "0"])
    assert code == 2
    assert "max_upload_mb" in capsys.readouterr().err
