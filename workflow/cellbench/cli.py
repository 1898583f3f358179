"""The ``cellbench`` command: one subcommand per pipeline stage, plus ``segment`` and
``serve``.

Snakemake rules and DVC stages call exactly these commands with the same
paths (DESIGN.md section 1). Every path has a default that follows the
project layout, so ``cellbench train --dataset synthetic --model unet`` works by
hand from the project root too.

Exit status: 0 on success, 2 on bad configuration or input (with a message
that names the file or key and the fix), 1 on unexpected errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _params(args):
    from cellbench.contract import load_checked

    return load_checked(args.params)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _set_threads(n: int | None) -> None:
    """Give torch ``n`` threads, never more than the CPUs available (oversubscription is slow)."""
    if n:
        import torch

        torch.set_num_threads(max(1, min(n, available_cpus())))


# ----------------------------------------------------------------------------- stages
def cmd_validate(args) -> None:
    from cellbench.contract import load_checked

    params = load_checked(args.params, timm=True)
    print(
        f"{args.params}: valid. datasets: {', '.join(params.run_datasets)}; "
        f"models: {', '.join(params.run_models)}"
    )


def cmd_download(args) -> None:
    from cellbench.datasets import get_dataset
    from cellbench.datasets.base import download_dataset

    params = _params(args)
    cfg = params.dataset(args.dataset)
    out = Path(args.out or f"data/raw/{cfg.name}")
    download_dataset(get_dataset(cfg, seed=params.seed, source=args.params), out)
    print(f"download {cfg.name}: {out}")


def cmd_convert(args) -> None:
    from cellbench.datasets import get_dataset
    from cellbench.datasets.base import convert_dataset

    params = _params(args)
    cfg = params.dataset(args.dataset)
    raw = Path(args.raw or f"data/raw/{cfg.name}")
    out = Path(args.out or f"data/converted/{cfg.name}")
    index = convert_dataset(get_dataset(cfg, seed=params.seed, source=args.params), raw, out)
    skipped = index.attrs.get("skipped_files", 0)
    print(
        f"convert {cfg.name}: {len(index)} images, {int(index['n_instances'].sum())} instances"
        + (f", {skipped} source files skipped (see the warnings above)" if skipped else "")
    )


def cmd_split(args) -> None:
    from cellbench.datasets.base import read_index, train_label_ids
    from cellbench.io import write_csv
    from cellbench.split import make_split

    params = _params(args)
    cfg = params.dataset(args.dataset)
    converted = Path(args.converted or f"data/converted/{cfg.name}")
    out = Path(args.out or f"data/splits/{cfg.name}.csv")
    split = make_split(read_index(converted), cfg.split, params.seed, train_label_ids(converted))
    write_csv(out, split)
    counts = split["split"].value_counts().to_dict()
    print(
        f"split {cfg.name}: "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
    )


def cmd_subsample(args) -> None:
    from cellbench.io import write_csv
    from cellbench.split import read_split, subsample_split

    split_csv = Path(args.split)
    sub = subsample_split(read_split(split_csv), args.size, args.seed)
    write_csv(Path(args.out), sub)
    counts = sub["split"].value_counts().to_dict()
    print(
        f"subsample {split_csv} (size {args.size}, seed {args.seed}): "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "unused", "val", "test"))
    )


def cmd_curve_sizes(args) -> None:
    from cellbench.split import read_split
    from cellbench.studies import make_curve_plan, write_curve_plan

    params = _params(args)
    params.dataset(args.dataset)
    split_csv = Path(args.split or f"data/splits/{args.dataset}.csv")
    out = Path(args.out or f"data/splits/{args.dataset}/learning_curve.json")
    split = read_split(split_csv)
    if not params.train_sizes:
        raise ValueError(
            f"{args.params}: run.train_sizes is empty, so there is no learning curve to plan; "
            "set e.g. 'train_sizes: [30, 100, all]' under 'run:'"
        )
    plan = make_curve_plan(params.train_sizes, int((split["split"] == "train").sum()))
    write_curve_plan(out, plan)
    print(
        f"curve-sizes {args.dataset}: {plan.n_train} train images; sizes trained: "
        f"{', '.join(plan.labels)} (asked: {', '.join(plan.requested)})"
    )


def cmd_union(args) -> None:
    from cellbench.config import UNION
    from cellbench.union import build_union

    params = _params(args)
    if not params.union:
        raise ValueError(
            f"{args.params}: run.union is off; set 'union: true' under 'run:' to build the union"
        )
    names = list(params.run_datasets)
    members = [
        (name, Path(args.data) / "converted" / name, Path(args.data) / "splits" / f"{name}.csv")
        for name in names
    ]
    out = Path(args.out or Path(args.data) / "converted" / UNION)
    out_split = Path(args.out_split or Path(args.data) / "splits" / f"{UNION}.csv")
    split = build_union(members, out, out_split)
    counts = split["split"].value_counts().to_dict()
    print(
        f"union of {', '.join(names)}: {len(split)} images ("
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
        + f") in {out}"
    )


def cmd_train(args) -> None:
    from cellbench.checkpoint import default_checkpoint_dir
    from cellbench.train import train_model

    params = _params(args)
    params.check_training_set(args.dataset)  # a dataset key, or 'union' when run.union is on
    cfg = params.model(args.model)
    _set_threads(args.threads)
    out = Path(args.out or f"results/models/{args.dataset}/{args.model}")
    config = train_model(
        cfg,
        args.dataset,
        Path(args.converted or f"data/converted/{args.dataset}"),
        Path(args.split or f"data/splits/{args.dataset}.csv"),
        out,
        # --seed: a learning curve's seed; it drives initialisation and augmentation
        seed=params.seed if args.seed is None else args.seed,
        device=args.device,
        # the bar only on a terminal: rule logs get one line per epoch instead
        progress=not args.no_progress and sys.stderr.isatty(),
        checkpoint_dir=Path(args.checkpoint_dir or default_checkpoint_dir(out)),
        resume=not args.no_resume,
    )
    if "reason" in config:
        print(f"train {args.dataset}/{args.model}: skipped: {config['reason']}")
        return
    print(
        f"train {args.dataset}/{args.model}: {config['epochs_run']} epochs, "
        f"{config['train_seconds']:.1f} s on {config['device']}"
    )


def cmd_predict(args) -> None:
    from cellbench.predict import predict_dir

    _set_threads(args.threads)
    n = predict_dir(
        Path(args.model_dir or f"results/models/{args.dataset}/{args.model}"),
        Path(args.converted or f"data/converted/{args.dataset}"),
        Path(args.split or f"data/splits/{args.dataset}.csv"),
        Path(args.out or f"results/predictions/{args.dataset}/{args.model}"),
        device=args.device,
        tile_size=args.tile_size,
        image_diameter=args.diameter,
    )
    print(f"predict {args.dataset}/{args.model}: {n} images")


def cmd_postprocess(args) -> None:
    from cellbench.predict import postprocess_dir

    n = postprocess_dir(
        Path(args.model_dir or f"results/models/{args.dataset}/{args.model}"),
        Path(args.predictions or f"results/predictions/{args.dataset}/{args.model}"),
        Path(args.out or f"results/masks/{args.dataset}/{args.model}"),
    )
    print(f"postprocess {args.dataset}/{args.model}: {n} images")


def cmd_score(args) -> None:
    from cellbench.score import score_dir

    params = _params(args)
    summary = score_dir(
        Path(args.masks or f"results/masks/{args.dataset}/{args.model}"),
        Path(args.converted or f"data/converted/{args.dataset}"),
        Path(args.split or f"data/splits/{args.dataset}.csv"),
        Path(args.out or f"results/scores/{args.dataset}/{args.model}"),
        dataset=args.dataset,
        model=args.model,
        settings=params.score,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        predictions=Path(args.predictions) if args.predictions else None,
    )
    if "skipped" in summary:
        print(f"score {args.dataset}/{args.model}: skipped: {summary['skipped']}")
        return
    mean_ap = summary.get("per_image_mean", {}).get("mean_ap")
    shown = "n/a" if mean_ap is None else f"{mean_ap:.4f}"
    print(f"score {args.dataset}/{args.model}: {summary['n_images']} images, mean AP {shown}")


def cmd_report(args) -> None:
    from cellbench.report import render_report

    params = _params(args)
    assets = Path(args.assets) if args.assets else None
    out = render_report(params, Path(args.data), Path(args.results), Path(args.out), assets)
    print(f"report: {out}")


def cmd_segment(args) -> None:
    from cellbench.segment import SegmentError, expand_inputs, segment_images

    _set_threads(args.threads)
    report = segment_images(
        Path(args.model_dir),
        expand_inputs(args.images, recursive=args.recursive),
        Path(args.out),
        device=args.device,
        tile_size=args.tile_size,
        image_diameter=args.diameter,
        overwrite=args.overwrite,
    )
    for path in report.written:
        print(path)
    if not report.ok:
        raise SegmentError(report.summary())
    print(f"segment: {report.summary()}", file=sys.stderr)


def cmd_list(args) -> None:
    from cellbench.datasets import DATASET_KINDS
    from cellbench.models import MODEL_FAMILIES

    print("dataset kinds:")
    for kind, entry in sorted(DATASET_KINDS.items()):
        print(f"  {kind:12s} {entry.summary}")
    print("model families:")
    for family, entry in sorted(MODEL_FAMILIES.items()):
        print(f"  {family:12s} {entry.summary}")
    print("`cellbench options NAME` lists the options of a family or kind.")


def cmd_options(args) -> None:
    import json

    import yaml

    from cellbench.contract import describe_registry_entry

    title, cls, facts = describe_registry_entry(args.name)
    docs = cls.describe()
    if args.format == "yaml":
        entry = {d.name: d.default for d in docs if not d.required}
        print(f"# {title}: every option with its default")
        print(yaml.safe_dump(entry, sort_keys=False, default_flow_style=None).rstrip())
        return
    if args.format == "json":
        print(json.dumps([d.__dict__ for d in docs], indent=2))
        return
    print(title)
    for key, value in facts.items():
        print(f"  {key}: {value}")
    if not docs:
        print("  (no options)")
        return
    width = max(len(d.name) for d in docs)
    for d in docs:
        default = "(required)" if d.required else json.dumps(d.default)
        print(f"  {d.name:<{width}}  {d.type}")
        print(f"  {'':<{width}}  default {default}. {d.description}")


def cmd_schema(args) -> None:
    from cellbench.config import schema_path
    from cellbench.contract import check_schema_file, render_schema
    from cellbench.io import write_text

    if args.write:
        write_text(schema_path(), render_schema())
        print(f"schema: wrote {schema_path()}")
    elif args.check:
        problem = check_schema_file()
        if problem:
            raise ValueError(problem)
        print(f"schema: {schema_path()} matches the options classes")
    else:
        print(render_schema(), end="")


def cmd_export(args) -> None:
    from cellbench.export.writers import export_masks

    result = export_masks(
        Path(args.masks),
        args.format,
        Path(args.out),
        images=Path(args.images) if args.images else None,
        index=Path(args.index) if args.index else None,
        fill_gaps=args.fill_gaps,
    )
    print(f"export {result.summary()}")


def cmd_export_bioimageio(args) -> None:
    from cellbench.export.bioimageio import best_model, package_model
    from cellbench.io import read_json
    from cellbench.modelfolder import check_model_folder

    ranked = None
    if args.model_dir:
        model_dir = check_model_folder(Path(args.model_dir))
        dataset = str(read_json(model_dir / "config.json").get("dataset", ""))
    else:
        dataset = args.dataset
        params = _params(args)
        params.dataset(dataset)
        models = args.models.split(",") if args.models else list(params.run_models)
        ranked = best_model(Path(args.results), dataset, models, network_only=True)
        model_dir = ranked.model_dir
        print(
            f"export-bioimageio: best model of {dataset}: {ranked.model} ({ranked.metric} "
            f"{ranked.score:.4f})"
        )
    split = Path(args.split or f"data/splits/{dataset}.csv")
    report = package_model(
        model_dir,
        Path(args.converted or f"data/converted/{dataset}"),
        Path(args.out),
        split_csv=split if split.is_file() else None,
        image_id=args.image_id,
        authors=args.author or (),
        license=args.license,
        ranked=ranked,
        test=not args.no_test,
    )
    for name, status in report.checks:
        print(f"  {status:>8}  {name}")
    print(f"export-bioimageio: {report.summary()}")


def cmd_serve(args) -> None:
    from cellbench.serve.options import from_arguments

    options = from_arguments(args)
    scores = Path(args.scores) if args.scores else None
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from cellbench.export.bioimageio import best_model

        params = _params(args)
        params.dataset(args.report_best)
        models = args.models.split(",") if args.models else list(params.run_models)
        ranked = best_model(Path(args.results), args.report_best, models)
        model_dir, scores = ranked.model_dir, scores or ranked.summary
        print(
            f"serve: best model of {args.report_best}: {ranked.model} ({ranked.metric} "
            f"{ranked.score:.4f})",
            file=sys.stderr,
        )
    try:
        from cellbench.serve.app import serve
    except ImportError as exc:
        raise ValueError(
            f"cellbench serve needs the 'serve' extra ({exc.name} is missing): "
            "pip install -e '.[serve]'"
        ) from None
    serve(model_dir, options, scores=scores)


# ----------------------------------------------------------------------------- parser
_SEGMENT_EPILOG = """\
output names:
  {stem}_masks.tif (img.tif -> img_masks.tif) when no other input has the same stem
  (ignoring case). Inputs that share a stem keep their extension (img.tif_masks.tif,
  img.png_masks.tif); when that still collides, the nearest parent folder names are put
  in front, joined with '__', as many as it takes (a/img.tif -> a__img.tif_masks.tif,
  b/img.tif -> b__img.tif_masks.tif). A disambiguated name never takes the plain name of
  another input; paths that differ only in case get a hash: img.tif_<12 hex>_masks.tif.

existing files:
  the run stops before any work when an output exists already (listing them); add
  --overwrite to replace them. An input image is never replaced, even with --overwrite.

failures and warnings:
  an image that cannot be read (or is a z-stack) is reported and skipped; the others are
  segmented and the exit status is 2 at the end, with a summary. A warning names images
  with over 10x the training data's objects per megapixel or under 0.1x its median
  object area (noise, an image unlike the training data, another scale).
"""


_EXPORT_EPILOG = """\
formats (one folder per export, plus export.json with counts):
  labels            {id}.tif: uint16 label TIFF for Fiji / napari (uint32 over 65535 labels)
  roi               {id}.zip: ImageJ ROI set, one ROI per label named 00001, ...; outlines
                    follow pixel edges, so filled ROIs give back exactly the label's pixels
  geojson           {id}.geojson: QuPath detections (Polygon / MultiPolygon, pixels)
  measurements      measurements.csv: area, centroid, bounding box, eccentricity, ...,
                    mean intensity per channel (with --images); one row per object
  kaggle-dsb2018    submission.csv: ImageId,EncodedPixels (column-major run-length)
  kaggle-sartorius  submission.csv: id,predicted (row-major run-length)
  ctc               {cell_type}/{sequence}_RES/maskTTT.tif (uint16), needs --index

the image id is the mask's file name without .tif (and without _masks for the files
of cellbench segment). An existing non-empty --out is refused; nothing is overwritten.
"""


_SERVE_EPILOG = """\
API (see /docs when running):
  GET  /          the page: drop an image, see the outlines and the count, download
  GET  /health    status, queue and limits
  GET  /model     the model card: family, options, thresholds, training data, test scores
  POST /segment   an image (multipart field 'file', or the raw body); ?format=json
                  (default), tiff (label TIFF), roi (ImageJ ROI zip), geojson, png (overlay)

  curl -F file=@image.tif 'http://127.0.0.1:8000/segment?format=tiff' -o image_masks.tif

the server has no authentication: keep the default host (127.0.0.1) and put a reverse
proxy with authentication in front for a shared server (docs/serve.md).
"""


def _train_size(text: str) -> int | str:
    """``--size``: a positive number of train images, or ``all``."""
    from cellbench.split import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tile_size(text: str) -> int:
    """``--tile-size``: tiles overlap by 64 px, so a tile must be well above twice that."""
    value = int(text)
    if value < 128:
        raise argparse.ArgumentTypeError(
            f"{value} is too small: tiles overlap by 64 px; use >= 128"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    from cellbench.export import FORMATS as EXPORT_FORMATS

    parser = argparse.ArgumentParser(
        prog="cellbench",
        description="Benchmark cell / nucleus instance segmentation: one subcommand per stage.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_, *opts, params=True):
        p = sub.add_parser(name, help=help_, description=help_)
        if params:
            p.add_argument(
                "--params", default="params.yaml", help="config file (default: params.yaml)"
            )
        for opt in opts:
            opt(p)
        p.set_defaults(func=func)
        return p

    def dataset(p):
        p.add_argument("--dataset", required=True, help="a key of 'datasets:' in params.yaml")

    def model(p):
        p.add_argument("--model", required=True, help="a key of 'models:' in params.yaml")

    def compute(p):
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")

    def tiles(p):
        p.add_argument(
            "--tile-size",
            type=_tile_size,
            default=1024,
            help="predict larger images in tiles of this many px (at least 128)",
        )
        p.add_argument(
            "--diameter",
            type=float,
            default=None,
            help="object diameter (px) of the images, for models trained with the 'diameter' "
            "option (default: the network estimates it per image)",
        )

    def path(flag, help_):
        return lambda p: p.add_argument(flag, default=None, help=help_)

    add("validate", cmd_validate, "check params.yaml against the schema and exit")
    add("list", cmd_list, "list the dataset kinds and model families")
    p = add(
        "options",
        cmd_options,
        "print every option of a model family or dataset kind: type, default, description",
    )
    p.add_argument("name", help="a model family (unet, flow, ...) or dataset kind (ctc, ...)")
    p.add_argument(
        "--format",
        choices=("text", "yaml", "json"),
        default="text",
        help="text (default), yaml (a complete params.yaml entry), json",
    )
    p = add("schema", cmd_schema, "print, check or rewrite params.yaml's generated JSON schema")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    group.add_argument("--write", action="store_true", help="regenerate the committed file")
    add(
        "download",
        cmd_download,
        "fetch (or generate) a dataset's original files",
        dataset,
        path("--out", "raw folder (default data/raw/{dataset})"),
    )
    add(
        "convert",
        cmd_convert,
        "convert originals into the common format",
        dataset,
        path("--raw", "raw folder"),
        path("--out", "converted folder"),
    )
    add(
        "split",
        cmd_split,
        "grouped, stratified, seeded train/val/test split",
        dataset,
        path("--converted", "converted folder"),
        path("--out", "split CSV"),
    )
    p = add(
        "subsample",
        cmd_subsample,
        "a learning-curve split: only SIZE train images kept (nested, stratified by cell "
        "type, seeded), the others marked 'unused'; val and test unchanged",
        params=False,
    )
    p.add_argument("--split", required=True, help="the dataset's split CSV")
    p.add_argument("--size", required=True, type=_train_size, help="train images to keep, or 'all'")
    p.add_argument("--seed", required=True, type=int, help="seed of the subsample")
    p.add_argument("--out", required=True, help="subsampled split CSV")
    add(
        "curve-sizes",
        cmd_curve_sizes,
        "the distinct training-set sizes of run.train_sizes for one split (sizes at or above "
        "its number of train images collapse to 'all'), as JSON",
        dataset,
        path("--split", "split CSV (default data/splits/{dataset}.csv)"),
        path("--out", "plan JSON (default data/splits/{dataset}/learning_curve.json)"),
    )
    p = add(
        "union",
        cmd_union,
        "the union of run.datasets (run.union): converted folder and split, ids prefixed "
        "with the dataset name",
    )
    p.add_argument("--data", default="data", help="data root (default: data)")
    p.add_argument("--out", default=None, help="converted folder (default data/converted/union)")
    p.add_argument("--out-split", default=None, help="split CSV (default data/splits/union.csv)")
    p = add(
        "train",
        cmd_train,
        "train a model and tune its thresholds on val",
        dataset,
        model,
        compute,
        path("--converted", "converted folder"),
        path("--split", "split CSV"),
        path("--out", "model folder"),
        path(
            "--checkpoint-dir",
            "training checkpoint folder, written every epoch and resumed from, removed "
            "when the model folder is written (default results/checkpoints/{dataset}/{model} "
            "for --out results/models/{dataset}/{model}, else OUT.checkpoint)",
        ),
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (shown only when stderr is a terminal)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start at epoch 1 even when a checkpoint of the same training exists (it is removed)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of initialisation and augmentation (default: params.yaml's seed); "
        "learning curves train one model per seed",
    )
    add(
        "predict",
        cmd_predict,
        "raw network maps for every test image",
        dataset,
        model,
        compute,
        tiles,
        path("--model-dir", "model folder"),
        path("--converted", "converted folder"),
        path("--split", "split CSV"),
        path("--out", "predictions folder"),
    )
    add(
        "postprocess",
        cmd_postprocess,
        "maps -> instance label TIFFs",
        dataset,
        model,
        path("--model-dir", "model folder"),
        path("--predictions", "predictions folder"),
        path("--out", "masks folder"),
    )
    add(
        "score",
        cmd_score,
        "score masks against ground truth",
        dataset,
        model,
        path("--masks", "masks folder"),
        path("--converted", "converted folder"),
        path("--split", "split CSV"),
        path("--out", "scores folder"),
        path("--model-dir", "model folder: its training time goes into metrics.json (optional)"),
        path("--predictions", "predictions folder: its timings go into metrics.json (optional)"),
    )
    p = add("report", cmd_report, "render the self-contained HTML report")
    p.add_argument("--data", default="data", help="data root (default: data)")
    p.add_argument("--results", default="results", help="results root (default: results)")
    p.add_argument("--out", default="results/report.html", help="report file")
    p.add_argument(
        "--assets",
        default=None,
        help="also write the files snakemake --report shows (leaderboard CSVs, score copies, "
        "training curves) into this folder, e.g. results/report",
    )
    p = add(
        "segment",
        cmd_segment,
        "segment new images with a trained model folder",
        compute,
        tiles,
        params=False,
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _SEGMENT_EPILOG
    p.add_argument("--model-dir", required=True, help="e.g. results/models/synthetic/unet")
    p.add_argument("--out", required=True, help="folder for the masks (see output names below)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing masks in --out (input images are never replaced)",
    )
    p.add_argument(
        "--recursive", action="store_true", help="folders include the images of their subfolders"
    )
    p.add_argument(
        "images",
        nargs="+",
        help="image files, folders (every .tif .tiff .png .jpg .jpeg in them) or quoted glob "
        "patterns ('data/*.tif')",
    )
    p = add(
        "serve",
        cmd_serve,
        "serve a trained model over HTTP: an API (POST /segment) and a web page for uploads",
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _SERVE_EPILOG
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-dir", default=None, help="e.g. results/models/synthetic/unet")
    which.add_argument(
        "--report-best",
        default=None,
        metavar="DATASET",
        help="serve the best model of this dataset (test mean AP, else CTC SEG)",
    )
    p.add_argument("--results", default="results", help="results root for --report-best")
    p.add_argument(
        "--models",
        default=None,
        help="--report-best: comma-separated candidates (default run.models)",
    )
    p.add_argument(
        "--scores",
        default=None,
        help="the model's summary.json for the model card (default: "
        "results/scores/{dataset}/{model}/summary.json next to the model folder)",
    )
    from cellbench.serve.options import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p = add(
        "export",
        cmd_export,
        "export masks for other tools: label TIFFs, ImageJ ROIs, GeoJSON, measurements, "
        "Kaggle submissions, CTC result folders",
        params=False,
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _EXPORT_EPILOG
    p.add_argument(
        "--masks", required=True, help="folder of label TIFFs, e.g. results/masks/synthetic/unet"
    )
    p.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="what to write (see below)"
    )
    p.add_argument("--out", required=True, help="export folder (must not exist or be empty)")
    p.add_argument(
        "--images",
        default=None,
        help="folder of the images ({id}.tif ...): mean intensity per channel in "
        "measurements and geojson",
    )
    p.add_argument(
        "--index", default=None, help="the dataset's index.csv (sequence, frame): needed by ctc"
    )
    p.add_argument(
        "--fill-gaps",
        action="store_true",
        help="ctc: write empty masks for the frames of a sequence without a mask",
    )
    p = add(
        "export-bioimageio",
        cmd_export_bioimageio,
        "write a trained model (or the best model of a dataset) as a bioimage.io model "
        "package and test it with bioimageio.core",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-dir", default=None, help="a unet/flow model folder")
    which.add_argument(
        "--dataset",
        default=None,
        help="package the best network model of this dataset (test mean AP, else CTC SEG)",
    )
    p.add_argument("--results", default="results", help="results root for --dataset")
    p.add_argument(
        "--models", default=None, help="--dataset: comma-separated candidates (default run.models)"
    )
    p.add_argument("--converted", default=None, help="converted dataset (test image, licence)")
    p.add_argument("--split", default=None, help="split CSV (the test image is its first test id)")
    p.add_argument(
        "--out", required=True, help="the package, e.g. results/bioimageio/synthetic.zip"
    )
    p.add_argument("--image-id", default=None, help="image of the test tensors")
    p.add_argument(
        "--author", action="append", default=None, help="author name (repeat for several)"
    )
    p.add_argument("--license", default=None, help="SPDX licence id (default: the data's)")
    p.add_argument(
        "--no-test", action="store_true", help="skip bioimageio.core's model test (not advised)"
    )
    return parser


def _version() -> str:
    from cellbench import __version__

    return f"cellbench {__version__}"


def main(argv: list[str] | None = None) -> int:
    from cellbench.cleanup import Terminated, install_termination_handlers
    from cellbench.config import ConfigError
    from cellbench.io import CellbenchIOError

    args = build_parser().parse_args(argv)
    _configure_logging()
    # SIGTERM (scancel, SLURM time limits) and SIGHUP unwind like an exception, so the
    # temporary outputs of the interrupted stage are removed; the exit status is 128 + signal.
    install_termination_handlers()
    try:
        result = args.func(args)
    except (ConfigError, CellbenchIOError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cellbench {args.command}: error: {message}", file=sys.stderr)
        if os.environ.get("CELLBENCH_DEBUG"):
            raise
        return 2
    except OSError as exc:  # the disk is full, a folder is in the way, no permission, ...
        print(f"cellbench {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        if os.environ.get("CELLBENCH_DEBUG"):
            raise
        return 2
    except Terminated as exc:
        print(f"cellbench {args.command}: {exc}; temporary outputs removed", file=sys.stderr)
        return int(exc.code)
    return result if isinstance(result, int) else 0


def _os_error_text(exc: OSError) -> str:
    """An operating-system error as one line that names the file(s) and says when a disk is full."""
    from cellbench.io import disk_full_error

    full = disk_full_error(exc, exc.filename if exc.filename is not None else ".")
    if full is not None:
        if exc.filename is not None:
            return str(full)
        return (
            f"the disk is full, or the disk quota used up ({exc.strerror or exc}); free some "
            "space, or write to a folder on another disk, and run again"
        )
    detail = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = f"{' -> '.join(names)}: " if names else ""
    return f"{where}{detail} ({type(exc).__name__})"


def _configure_logging() -> None:
    """Warnings and errors of every module, and training progress, on stderr, one line each."""
    import logging

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cellbench: %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        # training says one line per epoch (loss, validation score, time) in the rule log
        logging.getLogger("cellbench.train").setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
