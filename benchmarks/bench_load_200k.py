"""Embedding ~200k tiles with bounded memory; event-loop lateness in a viewer (issue 7).

1. Writes a generated H&E-like slide as a JPEG pyramidal TIFF with the streaming
   :func:`napari_seal.io.slide.writer.write_pyramidal_tiff` (default 115k x 115k px at
   0.5 um/px: ~207k tissue tiles of 224 px; reused when already there).
2. Embeds every tissue tile with a cheap encoder (``test-vit``: 64 px at 1.75 um/px,
   the same 112 um tile as 224 px at 0.5 um/px; ``color-stats`` is slower on CPU)
   in a fresh subprocess, sampling the RSS every 0.2 s; prints tiles, seconds,
   tiles/s, peak RSS and the RSS growth between 10% and 100% of the run
   (``rss_100 / rss_10``; bounded memory = a ratio near 1).
3. ``--viewer``: the same embedding through the widgets' background-job path
   (:class:`napari_seal._widgets._common.Job` over :func:`napari_seal._widgets.jobs.
   iter_embed_paths`, as the Embed widget starts it) with a shown napari viewer (run
   it under Xvfb: ``xvfb-run -a``), and a 20 ms QTimer recording how late each tick
   is; prints median / p99 / max lateness (budget 100 ms).

Usage::

    nice -n 10 xvfb-run -a python benchmarks/bench_load_200k.py \
        [--side-px 115000] [--encoder test-vit] [--viewer [--viewer-max-tiles N]]
        [--workdir DIR] [--keep] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MPP = 0.5


def make_slide(path: Path, side_px: int, *, seed: int = 0) -> dict:
    """Write (or reuse) the generated slide; return its size and write time."""
    from napari_seal.io.slide.writer import write_pyramidal_tiff
    from napari_seal.testing import synthetic_large_slide

    t0 = time.perf_counter()
    if not path.is_file():
        slide = synthetic_large_slide(side_px, side_px, mpp=MPP, seed=seed)
        write_pyramidal_tiff(path, slide, mpp=MPP, quality=80)
    return {
        "side_px": side_px,
        "tiff_mb": path.stat().st_size / 2**20,
        "write_s": time.perf_counter() - t0,
    }


class RssSampler:
    """Samples this process's RSS every ``interval_s`` in a daemon thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.rss_mb())

    @property
    def peak_mb(self) -> float:
        return max(self.samples) if self.samples else self.rss_mb()


def _rss_tracker(sampler: RssSampler):
    """A progress callback noting the RSS when 10% and 100% of the tiles are done."""
    marks: dict[str, float] = {}

    def callback(event) -> None:
        total = getattr(event, "total", None)
        done = getattr(event, "done", 0) or 0
        if not total:
            return
        if "rss_10" not in marks and done >= 0.1 * total:
            marks["rss_10"] = sampler.rss_mb()
            marks["t_10"] = time.perf_counter()
        if done >= total:
            marks["rss_100"] = sampler.rss_mb()

    return marks, callback


def embed_measured(
    tiff: Path,
    store: Path,
    *,
    encoder: str = "test-vit",
    batch_size: int = 64,
    max_tiles: int | None = None,
) -> dict:
    """Embed ``tiff`` into ``store`` in this process; return the measurements."""
    from napari_seal.embedding.run import embed

    sampler = RssSampler()
    marks, callback = _rss_tracker(sampler)
    base = sampler.rss_mb()
    t0 = time.perf_counter()
    with sampler:
        embed(
            tiff,
            encoder,
            store,
            batch_size=batch_size,
            max_tiles=max_tiles,
            device="cpu",
            progress=callback,
        )
    seconds = time.perf_counter() - t0
    import zarr

    g = zarr.open_group(store, mode="r")
    tiles = int(g["embeddings"].shape[0])
    done = bool(g["done"][:].all())
    return {
        "tiles": tiles,
        "all_chunks_done": done,
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "start_rss_mb": base,
        "peak_rss_mb": sampler.peak_mb,
        "rss_10_mb": marks.get("rss_10"),
        "rss_100_mb": marks.get("rss_100"),
        "rss_growth_10_to_100": (
            marks["rss_100"] / marks["rss_10"]
            if "rss_10" in marks and "rss_100" in marks
            else None
        ),
        "output_mb": g["embeddings"].nbytes / 2**20,
    }


def embed_in_viewer(
    tiff: Path,
    store: Path,
    *,
    encoder: str = "test-vit",
    batch_size: int = 64,
    max_tiles: int | None = None,
    interval_ms: int = 20,
    timeout_s: float = 7200.0,
) -> dict:
    """Embed through the widgets' Job path with a shown viewer; measure lateness."""
    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_seal._widgets._common import Job, warm_progress_ui
    from napari_seal._widgets.jobs import iter_embed_paths, warm_imports
    from napari_seal.embedding.run import iter_embed

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    sampler = RssSampler()
    marks, track = _rss_tracker(sampler)
    late: list[float] = []
    last = [time.perf_counter()]
    interval = interval_ms / 1000

    def tick() -> None:
        now = time.perf_counter()
        late.append(now - last[0] - interval)
        last[0] = now

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(tick)
    try:
        viewer.add_image(np.zeros((64, 64), np.uint8), name="placeholder")
        # what the Embed widget does when it is built, then let the viewer settle
        warm_imports("embed")
        warm_progress_ui()
        settle = time.perf_counter()
        while time.perf_counter() - settle < 0.5:
            app.processEvents()
            time.sleep(0.002)
        t0 = time.perf_counter()
        with sampler:
            if max_tiles is None:  # exactly what the Embed widget starts
                job = Job(
                    iter_embed_paths,
                    tiff,
                    store=store,
                    encoder=encoder,
                    batch_size=batch_size,
                    device="cpu",
                    description="Embedding",
                    on_event=track,
                )
            else:  # the same Job over the core generator, with a tile budget
                job = Job(
                    iter_embed,
                    tiff,
                    encoder,
                    store,
                    batch_size=batch_size,
                    device="cpu",
                    max_tiles=max_tiles,
                    description="Embedding",
                    on_event=track,
                )
            last[0] = time.perf_counter()
            timer.start()
            job.start()
            while job.running and time.perf_counter() - t0 < timeout_s:
                app.processEvents()
                time.sleep(0.002)
            timer.stop()
        seconds = time.perf_counter() - t0
        if job.error is not None:
            raise job.error
    finally:
        timer.stop()
        viewer.close()
    ms = np.asarray(late) * 1000 if late else np.zeros(1)
    import zarr

    g = zarr.open_group(store, mode="r")
    tiles = int(g["embeddings"].shape[0])
    return {
        "tiles": tiles,
        "all_chunks_done": bool(g["done"][:].all()),
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "peak_rss_mb": sampler.peak_mb,
        "rss_growth_10_to_100": (
            marks["rss_100"] / marks["rss_10"]
            if "rss_10" in marks and "rss_100" in marks
            else None
        ),
        "ticks": len(late),
        "lateness_median_ms": float(np.median(ms)),
        "lateness_p99_ms": float(np.percentile(ms, 99)),
        "lateness_max_ms": float(ms.max()),
    }


def _child(args: argparse.Namespace) -> int:
    fn = embed_in_viewer if args.child == "viewer" else embed_measured
    res = fn(
        Path(args.tiff),
        Path(args.store),
        encoder=args.encoder,
        batch_size=args.batch_size,
        max_tiles=args.max_tiles,
    )
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    return 0


def run_child(
    mode: str,
    tiff: Path,
    store: Path,
    args: argparse.Namespace,
    *,
    max_tiles: int | None = None,
) -> dict:
    """Run one measurement in a fresh subprocess (clean RSS); return its result."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--tiff",
        str(tiff),
        "--store",
        str(store),
        "--encoder",
        args.encoder,
        "--batch-size",
        str(args.batch_size),
    ]
    if max_tiles:
        cmd += ["--max-tiles", str(max_tiles)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        msg = f"{mode} run failed ({proc.returncode}):\n{err[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side-px", type=int, default=115_000)
    ap.add_argument("--encoder", default="test-vit")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tiles", type=int)
    ap.add_argument("--viewer", action="store_true", help="also the viewer run")
    ap.add_argument(
        "--viewer-max-tiles", type=int, help="tile budget of the viewer run"
    )
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the slide and stores")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", choices=["plain", "viewer"], help=argparse.SUPPRESS)
    ap.add_argument("--tiff", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="napari-seal-load-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(work / "cache"))
    tiff = work / f"slide_{args.side_px}.tif"
    result: dict = {"slide": make_slide(tiff, args.side_px)}
    s = result["slide"]
    print(
        f"slide {s['side_px']} x {s['side_px']} px, {s['tiff_mb']:.0f} MB TIFF "
        f"({s['write_s']:.0f} s to write)"
    )
    import shutil

    try:
        store = work / "plain.zarr"
        shutil.rmtree(store, ignore_errors=True)
        r = run_child("plain", tiff, store, args, max_tiles=args.max_tiles)
        result["plain"] = r
        print(
            f"embed ({args.encoder}): {r['tiles']} tiles in {r['seconds']:.0f} s = "
            f"{r['tiles_per_s']:.0f} tiles/s; peak RSS {r['peak_rss_mb']:.0f} MB; RSS "
            f"{r['rss_10_mb']:.0f} MB at 10% -> {r['rss_100_mb']:.0f} MB at 100% "
            f"(growth {r['rss_growth_10_to_100']:.3f})"
        )
        if args.viewer:
            store = work / "viewer.zarr"
            shutil.rmtree(store, ignore_errors=True)
            v = run_child("viewer", tiff, store, args, max_tiles=args.viewer_max_tiles)
            result["viewer"] = v
            print(
                f"viewer + Job: {v['tiles']} tiles in {v['seconds']:.0f} s = "
                f"{v['tiles_per_s']:.0f} tiles/s; peak RSS {v['peak_rss_mb']:.0f} MB; "
                f"event-loop lateness median {v['lateness_median_ms']:.1f} ms, p99 "
                f"{v['lateness_p99_ms']:.1f} ms, max {v['lateness_max_ms']:.0f} ms "
                f"({v['ticks']} ticks)"
            )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
