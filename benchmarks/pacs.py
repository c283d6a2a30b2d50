"""PACS retrieval: a 300-slice 512 x 512 CT served by a private local Orthanc (Debian orthanc +
orthanc-dicomweb), fetched by medseg (streamed to disk, checked against the QIDO instance list)
and by dicomweb-client's ``retrieve_series`` (a list of datasets in memory) and ``iter_series``.

Each fetch runs in a fresh Python process; the table gives its wall time and its peak resident
memory (``VmHWM``), with the memory after imports alone as a baseline, and the load average
before and after. Every method asks for ``transfer-syntax=*`` (the stored files). Where the
machine allows it, Orthanc runs in a loopback-only network namespace reached through a
forwarder thread in this process (the same path for every method). dicomweb-client is used
only when it is installed (``pip install dicomweb-client``); the table says so.

The same fetch over DIMSE (``medseg-dimse``): :class:`medseg.pacs.dimse.DimseClient` C-GET from
Orthanc's DICOM port (one storage context per transfer syntax; files written unparsed).

End to end (``--e2e-series 8``): that many small CT phantom series (``--e2e-shape 128,128,64``,
one study each) uploaded to a fresh local Orthanc, then :func:`medseg.batch.pacs_source.run_pacs_batch`
query -> fetch -> segment (a small random U-Net export) -> STOW-RS push of each DICOM-SEG
(verified by QIDO), with 1 and 2 workers (``--e2e-workers 1,2``) and 0 or 1 series fetched ahead of the workers
(``--e2e-prefetch 0,1``: 0 is fetch then segment in turn, 1 overlaps the next fetch with segmenting); the sources are uploaded
again before each run so that every run pushes into a PACS without SEGs. No HTML report.

Usage: python benchmarks/pacs.py [--only all|fetch|e2e] [--slices 300] [--repeats 3] [--e2e-series 8]
       [--e2e-shape 128,128,64] [--e2e-workers 1,2] [--e2e-prefetch 0,1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER, PASSWORD = "bench", "bench-password"

CHILD = r"""
import json, os, resource, sys, time
method, url, study, series, out = sys.argv[1:6]
def rss():  # VmHWM: this process's peak (ru_maxrss would carry the parent's peak across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
if method == "medseg":
    from medseg.pacs.client import PacsClient
    from medseg.pacs.query import SeriesRef
    from medseg.pacs.retrieve import fetch_series
    import pydicom, requests
    base = rss(); t = time.perf_counter()
    with PacsClient(url, auth="basic") as c:
        folder = fetch_series(c, SeriesRef(study, series), out)
    n = len(list(folder.iterdir()))
elif method == "medseg-dimse":
    from medseg.pacs.dimse import DimseClient
    from medseg.pacs.query import SeriesRef
    from medseg.pacs.retrieve import fetch_series
    import pydicom, pynetdicom
    base = rss(); t = time.perf_counter()
    with DimseClient(url) as c:
        folder = fetch_series(c, SeriesRef(study, series), out)
    n = len(list(folder.iterdir()))
else:
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass
    import pydicom
    c = DICOMwebClient(url, session=create_session_from_user_pass(os.environ["MEDSEG_PACS_USER"],
                                                                    os.environ["MEDSEG_PACS_PASSWORD"]))
    base = rss(); t = time.perf_counter()
    media = (("application/dicom", "*"),)
    if method == "retrieve_series":
        n = len(c.retrieve_series(study, series, media_types=media))
    else:
        n = 0
        for ds in c.iter_series(study, series, media_types=media):
            n += 1
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": rss(), "base_mb": base, "instances": n}))
"""


def make_series(folder: Path, slices: int) -> list[Path]:
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom

    image, _ = make_phantom((512, 512, slices), (0.8, 0.8, 1.0), seed=3)
    return write_dicom_series(image, folder, seed=3, patient_name="Bench^Phantom")


def run(method: str, url: str, study: str, series: str, out: Path) -> dict:
    env = {**os.environ, "MEDSEG_PACS_USER": USER, "MEDSEG_PACS_PASSWORD": PASSWORD}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", CHILD, method, url, study, series, str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def end_to_end(work: Path, n_series: int, shape: tuple[int, int, int], worker_counts: list[int],
               prefetches: list[int]) -> None:
    """query -> fetch -> segment -> push of ``n_series`` CT series, once per worker count and prefetch
    depth (0: no series fetched ahead of the workers, fetch and segment in turn); prints a table."""
    from medseg.batch.pacs_source import run_pacs_batch
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom
    from medseg.pacs.client import PacsClient
    from medseg.pacs.orthanc import LocalOrthanc
    from medseg.pacs.query import query_series
    from medseg.testing import make_random_export

    files: list[Path] = []
    for i in range(n_series):
        image, _ = make_phantom(shape, (1.5, 1.5, 2.5), seed=100 + i)
        files += write_dicom_series(image, work / "e2e_source" / f"s{i}", seed=100 + i, patient_id=f"BENCH{i:03d}",
                                    patient_name="Bench^Phantom")
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    model = make_random_export(work / "e2e_model")
    os.environ["MEDSEG_PACS_USER"], os.environ["MEDSEG_PACS_PASSWORD"] = USER, PASSWORD
    rows = []
    with LocalOrthanc(work / "e2e_orthanc", user=USER, password=PASSWORD) as orthanc:
        where = "loopback-only network namespace + forwarder" if orthanc.netns else "host loopback"
        for workers, prefetch in [(w, p) for w in worker_counts for p in prefetches]:
            orthanc.clear()
            t = time.perf_counter()
            orthanc.upload(*files)
            upload_s = time.perf_counter() - t
            out = work / f"e2e_out_w{workers}_p{prefetch}"
            shutil.rmtree(out, ignore_errors=True)
            load_before = _load()
            with PacsClient(orthanc.dicomweb_url, auth="basic") as client:
                t = time.perf_counter()
                result = run_pacs_batch(model, client, out, where=["Modality=CT"], push=True, workers=workers,
                                        prefetch=prefetch, report=False, max_series=n_series)
                seconds = time.perf_counter() - t
                segs = len(query_series(client, where=["Modality=SEG"]))
            info = json.loads((out / "run.json").read_text())["pacs"]
            per = [r.get("timings_s") or {} for r in result.records]
            rows.append({
                "workers": workers, "prefetch": prefetch, "ok": result.count("ok"), "pushed": info["pushed"], "segs_listed": segs,
                "seconds": seconds, "fetch_s": info["fetch_s"],
                "wait_s": sum(p.get("fetch_wait", 0.0) for p in per),
                "model_load_s": sum(p.get("model_load", 0.0) for p in per),
                "predict_s": sum(p.get("predict", 0.0) for p in per), "upload_s": upload_s,
                "load_before": load_before, "load_after": _load()})
    print(f"\nend to end: {n_series} CT series of {shape[0]} x {shape[1]} x {shape[2]} ({size_mb:.1f} MB), one study "
          f"each; Orthanc {where}; random unet3d export (medseg.testing.make_random_export); "
          f"query -> fetch -> segment -> push (STOW-RS + QIDO check); {os.cpu_count()} CPUs")
    print(f"{'workers':>7}{'prefetch':>9}{'ok':>4}{'pushed':>7}{'SEG listed':>11}{'seconds':>9}{'series/min':>11}"
          f"{'fetch s':>8}{'wait s':>7}{'model load s':>13}{'predict s':>10}   load avg before -> after (1/5/15 min)")
    for r in rows:
        print(f"{r['workers']:>7}{r['prefetch']:>9}{r['ok']:>4}{r['pushed']:>7}{r['segs_listed']:>11}"
              f"{r['seconds']:>9.1f}{60 * r['ok'] / r['seconds']:>11.1f}{r['fetch_s']:>8.1f}{r['wait_s']:>7.1f}"
              f"{r['model_load_s']:>13.1f}{r['predict_s']:>10.1f}   {r['load_before']} -> {r['load_after']}")
    print("(fetch s: sum of the network thread's fetches, which overlap segmentation; wait s: sum of the workers' "
          "waits for a fetch; prefetch 0 fetches each series only once a worker is free, i.e. fetch and segment in "
          "turn; model load s and predict s: sums over series)")


def main() -> None:
    import pydicom

    from medseg.pacs.orthanc import LocalOrthanc

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["all", "fetch", "e2e"], default="all")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e-series", type=int, default=8)
    parser.add_argument("--e2e-shape", default="128,128,64")
    parser.add_argument("--e2e-workers", default="1,2")
    parser.add_argument("--e2e-prefetch", default="0,1")
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="medseg-bench-pacs-"))
    load_before = os.getloadavg()
    try:
        if args.only == "e2e":
            end_to_end(work, args.e2e_series, tuple(int(v) for v in args.e2e_shape.split(",")),  # type: ignore[arg-type]
                       [int(v) for v in args.e2e_workers.split(",")], [int(v) for v in args.e2e_prefetch.split(",")])
            return
        files = make_series(work / "source", args.slices)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        study, series = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
        try:
            import dicomweb_client  # noqa: F401

            methods = ["medseg", "medseg-dimse", "retrieve_series", "iter_series"]
            note = f"dicomweb-client {dicomweb_client.__version__} installed from PyPI into the venv"
        except ImportError:
            methods = ["medseg", "medseg-dimse"]
            note = "dicomweb-client not installed: medseg only (pip install dicomweb-client to compare)"
        with LocalOrthanc(work / "orthanc", user=USER, password=PASSWORD) as orthanc:
            t = time.perf_counter()
            orthanc.upload(*files)
            upload_s = time.perf_counter() - t
            results: dict[str, list[dict]] = {m: [] for m in methods}
            for _ in range(args.repeats):
                for m in methods:
                    url = orthanc.dicom_url if m == "medseg-dimse" else orthanc.dicomweb_url
                    results[m].append(run(m, url, study, series, work / "fetch" / m))
            where = "loopback-only network namespace + forwarder" if orthanc.netns else "host loopback"
        load_after = os.getloadavg()
        print(f"series: {len(files)} x 512 x 512 CT, {size_mb:.0f} MB on disk; Orthanc {where}; "
              f"upload (REST POST /instances) {upload_s:.1f} s")
        print(note)
        print(f"load average (1/5/15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
              f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs")
        print(f"{'method':<40}{'instances':>10}{'best s':>9}{'median s':>10}{'peak MB':>9}{'import MB':>10}"
              f"{'MB over import':>15}{'time / medseg':>14}")
        best_medseg = min(r["seconds"] for r in results["medseg"])
        for m in methods:
            rs = results[m]
            secs = sorted(r["seconds"] for r in rs)
            peak = max(r["peak_mb"] for r in rs)
            base = min(r["base_mb"] for r in rs)
            label = {"medseg": "medseg fetch_series (WADO-RS, to disk)",
                     "medseg-dimse": "medseg fetch_series (C-GET, to disk)"}.get(m, f"dicomweb-client {m}")
            print(f"{label:<40}{rs[0]['instances']:>10}{secs[0]:>9.2f}{secs[len(secs) // 2]:>10.2f}{peak:>9.0f}"
                  f"{base:>10.0f}{peak - base:>15.0f}{secs[0] / best_medseg:>14.2f}")
        if args.only == "all":
            end_to_end(work, args.e2e_series, tuple(int(v) for v in args.e2e_shape.split(",")),  # type: ignore[arg-type]
                       [int(v) for v in args.e2e_workers.split(",")], [int(v) for v in args.e2e_prefetch.split(",")])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
