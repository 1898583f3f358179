"""The FastAPI application of ``cellbench serve``, and :func:`serve` that runs it.

One model, loaded once per server process, is shared by every request. Uploads
are read into memory (at most ``max_upload_mb`` each, enforced while the body
streams in; multipart parts over 1 MiB are spooled by Starlette to unlinked files
in the temporary folder, which :func:`serve` makes private to the server). At most
``max_queue`` requests hold an upload at once; one at a time is decoded, segmented
and encoded, in a single worker thread, so concurrent requests wait instead of
multiplying memory. Every request has ``timeout_s`` for upload, waiting and work:
503 when it is still waiting for the model, 504 when segmenting ran over (a tiled
image stops at the next tile). Nothing from an upload's name is used as a path.

Routes: ``GET /`` (the page), ``GET /health``, ``GET /model``, ``POST /segment``,
``GET /docs`` and ``/openapi.json`` (FastAPI), ``/static/*`` (the page's files).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from cellbench import __version__
from cellbench.modelfolder import LoadedModel, load_model
from cellbench.segment import plausibility_warning, segment_array, training_stats
from cellbench.serve import answers
from cellbench.serve.card import model_card
from cellbench.serve.decode import UploadError, decode_upload, safe_stem, sniff
from cellbench.serve.options import ServeOptions

__all__ = ["ENV_CONFIG", "create_app", "create_app_from_env", "serve"]

log = logging.getLogger("cellbench.serve")

PACKAGE = Path(__file__).resolve().parent
#: with workers > 1, each uvicorn worker builds its app from this environment variable
ENV_CONFIG = "CELLBENCH_SERVE_CONFIG"
#: multipart framing allowed on top of the image in a request body
FORM_OVERHEAD = 64 * 1024
#: raw request bodies (not multipart) are taken with these content types
RAW_TYPES = ("application/octet-stream", "image/tiff", "image/png", "image/jpeg")

Format = Literal["json", "tiff", "roi", "geojson", "png"]
_FORMAT_HELP = "; ".join(f"{k}: {v}" for k, v in answers.FORMATS.items())

#: security headers of every answer; the page loads nothing from elsewhere
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class _TooLarge(Exception):
    """The request body passed the upload limit while streaming in."""


class _Cancelled(Exception):
    """A segmentation ran past its request's timeout and was stopped between tiles."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=HEADERS)


@dataclass
class _State:
    """What every request shares: the model, the limits, the one inference thread."""

    model: LoadedModel
    options: ServeOptions
    card: dict[str, Any]
    training: tuple[float, float] | None
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cellbench-infer"
        )
    )
    holding: int = 0
    served: int = 0
    failed: int = 0
    busy: bool = False

    def limits(self) -> dict[str, Any]:
        o = self.options
        return {
            "max_upload_mb": o.max_upload_mb,
            "max_megapixels": o.max_megapixels,
            "timeout_s": o.timeout_s,
            "max_queue": o.max_queue,
            "tile_size": o.tile_size,
        }


# ----------------------------------------------------------------------------- upload
def _too_large(options: ServeOptions, size: int | None = None) -> str:
    got = f" ({size / 2**20:.1f} MiB)" if size is not None else ""
    return (
        f"the upload{got} is larger than this server's limit of {options.max_upload_mb:g} MiB "
        "(--max-upload-mb)"
    )


async def _read_upload(request: Request, options: ServeOptions) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and its name (for answers' names only).

    A multipart form with a ``file`` field, or a raw body with an image (or
    ``application/octet-stream``) content type. The byte limit is enforced while the
    body streams in.
    """
    limit = options.max_upload_bytes
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body_limit = limit + (FORM_OVERHEAD if kind == "multipart/form-data" else 0)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > body_limit:
        raise _TooLarge(int(length))
    received = 0
    receive = request.receive

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > body_limit:
                raise _TooLarge(received)
        return message

    if kind == "multipart/form-data":
        form = await Request(request.scope, limited).form(max_files=1, max_fields=8)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise UploadError(
                    422,
                    "the form has no file field 'file'; send the image as "
                    "`curl -F file=@image.tif ...`",
                )
            data = await upload.read()
            name = upload.filename
        finally:
            await form.close()
        if len(data) > limit:
            raise _TooLarge(len(data))
        return data, name
    if kind in RAW_TYPES:
        chunks = []
        async for chunk in Request(request.scope, limited).stream():
            chunks.append(chunk)
        return b"".join(chunks), request.headers.get("x-filename")
    raise UploadError(
        415,
        f"content type '{kind or 'none'}' is not an image upload; send the image as a "
        "multipart form field 'file' (`curl -F file=@image.tif`) or as the raw body with "
        f"Content-Type {', '.join(RAW_TYPES)}",
    )


# ----------------------------------------------------------------------------- the work
def _work(
    state: _State,
    data: bytes,
    stem: str,
    fmt: str,
    overlay: bool,
    running: threading.Event,
    cancel: threading.Event,
) -> tuple[Any, dict[str, float], dict[str, Any]]:
    """Decode, segment, encode: in the inference thread, one request at a time."""
    running.set()
    state.busy = True
    try:
        t0 = time.perf_counter()
        image = decode_upload(data, max_pixels=state.options.max_pixels)
        t1 = time.perf_counter()

        def check(done: int, total: int) -> None:
            if cancel.is_set():
                raise _Cancelled

        result = segment_array(
            state.model, image, tile_size=state.options.tile_size, progress=check
        )
        labels = result.labels
        t2 = time.perf_counter()
        meta = {
            "name": stem,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "channels": 1 if image.ndim == 2 else int(image.shape[2]),
            "dtype": str(image.dtype),
        }
        info = {
            "image": meta,
            "warning": plausibility_warning(stem, labels, state.training),
            "n_objects": int(len(_ids(labels))),
        }
        if fmt == "json":
            body: Any = answers.json_summary(labels)
            if overlay:
                png = answers.overlay_png(image, labels).body
                body["overlay_png"] = "data:image/png;base64," + base64.b64encode(png).decode()
        elif fmt == "geojson":
            body = answers.geojson_answer(labels, image, stem)
        else:
            body = answers.ENCODERS[fmt](image, labels)
        t3 = time.perf_counter()
        timings = {"decode_s": t1 - t0, "segment_s": t2 - t1, "encode_s": t3 - t2}
        return body, timings, info
    finally:
        state.busy = False


def _ids(labels):
    import numpy as np

    return np.unique(labels[labels > 0])


async def _segment(state: _State, request: Request, fmt: str, overlay: bool) -> Response:
    options = state.options
    started = time.perf_counter()
    deadline = started + options.timeout_s
    if state.holding >= options.max_queue:
        return _error(
            503,
            f"the server is busy: {state.holding} requests are waiting for the model "
            f"(--max-queue {options.max_queue}); try again in a moment",
        )
    state.holding += 1
    try:
        try:
            data, name = await asyncio.wait_for(_read_upload(request, options), options.timeout_s)
        except _TooLarge as exc:
            return _error(413, _too_large(options, exc.args[0] if exc.args else None))
        except TimeoutError:
            return _error(408, f"the upload took longer than this server's {options.timeout_s:g} s")
        if sniff(data) is None:  # refused at once, without waiting for the model
            decode_upload(data, max_pixels=options.max_pixels)  # raises the 415 with its message
        stem = safe_stem(name)
        running, cancel = threading.Event(), threading.Event()
        job = state.executor.submit(_work, state, data, stem, fmt, overlay, running, cancel)
        waiting = asyncio.wrap_future(job)
        queued = time.perf_counter()
        try:
            body, timings, info = await asyncio.wait_for(
                asyncio.shield(waiting), max(0.0, deadline - queued)
            )
        except TimeoutError:
            # the outcome of a job left behind is not wanted: consume it, never log it
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            if job.cancel():
                return _error(
                    503,
                    f"the server is busy: this request waited {options.timeout_s:g} s "
                    "(--timeout-s) for the model without its turn; try again later",
                )
            cancel.set()
            return _error(
                504,
                f"segmenting this image took longer than this server's {options.timeout_s:g} s "
                "(--timeout-s); segment a smaller image, or large ones with `cellbench segment`",
            )
        finally:
            del data
        total = time.perf_counter() - started
        work = sum(timings.values())
        timings = {
            "upload_s": queued - started,
            "queued_s": max(0.0, total - (queued - started) - work),
            **timings,
            "total_s": total,
        }
        timings = {k: round(v, 4) for k, v in timings.items()}
        state.served += 1
        headers = {
            **HEADERS,
            "X-Cellbench-Objects": str(info["n_objects"]),
            "Server-Timing": ", ".join(f"{k[:-2]};dur={v * 1000:.1f}" for k, v in timings.items()),
        }
        if fmt == "json":
            payload = {
                "model": state.card["model"],
                "family": state.card["family"],
                "image": info["image"],
                **body,
                "warning": info["warning"],
                "timings": timings,
            }
            return JSONResponse(payload, headers=headers)
        if fmt == "geojson":
            content = json.dumps(body).encode()
            media, suffix = "application/geo+json", ".geojson"
        else:
            content, media, suffix = body.body, body.media_type, body.suffix
        headers["Content-Disposition"] = f'attachment; filename="{stem}{suffix}"'
        return Response(content, media_type=media, headers=headers)
    except UploadError as exc:
        state.failed += 1
        return _error(exc.status, exc.message)
    except _Cancelled:
        state.failed += 1
        return _error(504, "segmentation stopped: it ran past the request's timeout")
    finally:
        state.holding -= 1


# ----------------------------------------------------------------------------- the app
_SEGMENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image: a multipart form field `file`, or the raw body",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in RAW_TYPES},
        },
    }
}


def _mount_offline_docs(app: FastAPI) -> None:
    """``/docs``: FastAPI's Swagger UI page, with its script and style served by this server.

    FastAPI's default page loads them from a CDN; the ``swagger-ui-bundle`` package
    (in the ``serve`` extra) ships the same files, so the docs open without the internet.
    """
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount(
        "/static-docs",
        StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
        name="static-docs",
    )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/static-docs/swagger-ui-bundle.js",
            swagger_css_url="/static-docs/swagger-ui.css",
            swagger_favicon_url="/static-docs/favicon-32x32.png",
        )


def create_app(
    model_dir: Path,
    options: ServeOptions | None = None,
    *,
    scores: Path | None = None,
    model: LoadedModel | None = None,
) -> FastAPI:
    """The application serving one model folder.

    Parameters
    ----------
    model_dir : path
        A folder written by the train stage.
    options : ServeOptions, optional
        Limits (defaults when None).
    scores : path, optional
        The model's ``summary.json`` (default: found next to the model folder).
    model : LoadedModel, optional
        Already loaded (else loaded here, on ``options.device``).

    Raises
    ------
    cellbench.errors.ConfigError
        ``model_dir`` is not a loadable model folder.
    """
    import jinja2

    options = options or ServeOptions()
    model = model or load_model(Path(model_dir), options.device)
    card = model_card(
        Path(model_dir),
        model.config,
        model.thresholds.resolved(),
        scores=scores,
        device=str(model.device),
    )
    state = _State(model, options, card, training_stats(model.config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="cellbench serve",
        version=__version__,
        description=(
            f"Instance segmentation with the model **{card['model']}** ({card['family']}). "
            "Upload an image to `POST /segment`; the page at `/` does it in a browser."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: the docs work offline too
        redoc_url=None,
    )
    app.state.cellbench = state
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")
    _mount_offline_docs(app)
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = templates.get_template("index.html.j2").render(
            card=card,
            limits=state.limits(),
            formats=answers.FORMATS,
            version=__version__,
        )
        return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": PAGE_CSP})

    @app.get("/health", summary="liveness and load")
    def health() -> dict[str, Any]:
        """``ok`` while the server answers; the model, its device, the queue and the limits."""
        return {
            "status": "ok",
            "model": card["model"],
            "family": card["family"],
            "device": str(model.device),
            "busy": state.busy,
            "waiting": state.holding,
            "served": state.served,
            "refused": state.failed,
            "limits": state.limits(),
            "pid": os.getpid(),
        }

    @app.get("/model", summary="the model card")
    def model_info() -> dict[str, Any]:
        """Family, options, tuned thresholds, training data and test scores of the model."""
        return card

    @app.post(
        "/segment",
        summary="segment an uploaded image",
        openapi_extra=_SEGMENT_BODY,
        responses={
            200: {"description": "the labels in the chosen format"},
            408: {"description": "the upload took longer than the timeout"},
            413: {"description": "the upload is larger than --max-upload-mb"},
            415: {"description": "not a TIFF, PNG or JPEG (by content), or cannot be decoded"},
            422: {"description": "decodes but cannot be segmented (stack, too many pixels)"},
            503: {"description": "busy: too many requests waiting, or waited past the timeout"},
            504: {"description": "segmenting took longer than the timeout"},
        },
    )
    async def segment(
        request: Request,
        format: Annotated[  # noqa: A002 - the API's parameter name
            Format, Query(description=_FORMAT_HELP)
        ] = "json",
        overlay: Annotated[
            bool, Query(description="format=json: add the PNG overlay as a data URI (overlay_png)")
        ] = False,
    ) -> Response:
        """Segment one image (TIFF 8/16-bit or float, PNG, JPEG; grey, RGB, RGBA).

        The type is told by the file's content, not its name. Large images are
        segmented in tiles. Errors answer ``{"detail": message}``.
        """
        try:
            return await _segment(state, request, format, overlay)
        except Exception:  # the server keeps serving; the log has the traceback
            log.exception("POST /segment failed")
            return _error(500, "internal error while segmenting; the server log has the details")

    return app


def create_app_from_env() -> FastAPI:
    """The app described by :data:`ENV_CONFIG` (JSON): each uvicorn worker calls this."""
    config = json.loads(os.environ[ENV_CONFIG])
    options = ServeOptions.model_validate(config["options"])
    _threads(options)
    scores = Path(config["scores"]) if config.get("scores") else None
    return create_app(Path(config["model_dir"]), options, scores=scores)


def _threads(options: ServeOptions) -> None:
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)


def serve(model_dir: Path, options: ServeOptions, *, scores: Path | None = None) -> None:
    """Load the model and serve it until interrupted (uvicorn).

    The model folder is checked (and, with one worker, loaded) before the port is
    opened, so a bad folder fails at once with a message. Uploads spooled to disk go
    to a private temporary folder, removed on exit.
    """
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down already
        _serve(model_dir, options, scores)


def _serve(model_dir: Path, options: ServeOptions, scores: Path | None) -> None:
    import tempfile

    before = os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="cellbench-serve-") as tmp:
        os.environ["TMPDIR"] = tmp  # Starlette's spooled uploads, also in worker processes
        tempfile.tempdir = None
        try:
            _run(model_dir, options, scores)
        finally:  # the folder is about to go: later temporaries of this process go back
            if before is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = before
            tempfile.tempdir = None


def _run(model_dir: Path, options: ServeOptions, scores: Path | None) -> None:
    """Run uvicorn: the app in this process, or ``workers`` processes building their own."""
    import uvicorn

    if options.workers == 1:
        _threads(options)
        app = create_app(Path(model_dir), options, scores=scores)
        uvicorn.run(app, host=options.host, port=options.port, log_level="info")
        return
    from cellbench.modelfolder import check_model_folder

    check_model_folder(Path(model_dir))
    os.environ[ENV_CONFIG] = json.dumps(
        {
            "model_dir": str(Path(model_dir).resolve()),
            "options": options.resolved(),
            "scores": str(scores) if scores else None,
        }
    )
    uvicorn.run(
        "cellbench.serve.app:create_app_from_env",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_level="info",
    )
