"""PACS retrieval: a 300-slice 512 x 512 CT served by a private local Orthanc (Debian orthanc +
orthanc-dicomweb), fetched by medseg (streamed to disk, checked against the QIDO instance list)
and by dicomweb-client's ``retrieve_series`` (a list of datasets in memory) and ``iter_series``.

Each fetch runs in a fresh Python process; the table gives its wall time and its peak resident
memory (``VmHWM``), with the memory after imports alone as a baseline, and the load average
before and after. Every method asks for ``transfer-syntax=*`` (the stored files). Where the
machine allows it, Orthanc runs in a loopback-only network namespace reached through a
forwarder thread in this process (the same path for every method). dicomweb-client is used
only when it is installed (``pip install dicomweb-client``); the table says so.

Usage: python benchmarks/pacs.py [--slices 300] [--repeats 3] [--keep DIR]
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


def main() -> None:
    import pydicom

    from medseg.pacs.orthanc import LocalOrthanc

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="medseg-bench-pacs-"))
    load_before = os.getloadavg()
    try:
        files = make_series(work / "source", args.slices)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        study, series = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
        try:
            import dicomweb_client  # noqa: F401

            methods = ["medseg", "retrieve_series", "iter_series"]
            note = f"dicomweb-client {dicomweb_client.__version__} installed from PyPI into the venv"
        except ImportError:
            methods = ["medseg"]
            note = "dicomweb-client not installed: medseg only (pip install dicomweb-client to compare)"
        with LocalOrthanc(work / "orthanc", user=USER, password=PASSWORD) as orthanc:
            t = time.perf_counter()
            orthanc.upload(*files)
            upload_s = time.perf_counter() - t
            results: dict[str, list[dict]] = {m: [] for m in methods}
            for _ in range(args.repeats):
                for m in methods:
                    results[m].append(run(m, orthanc.dicomweb_url, study, series, work / "fetch" / m))
            where = "loopback-only network namespace + forwarder" if orthanc.netns else "host loopback"
        load_after = os.getloadavg()
        print(f"series: {len(files)} x 512 x 512 CT, {size_mb:.0f} MB on disk; Orthanc {where}; "
              f"upload (REST POST /instances) {upload_s:.1f} s")
        print(note)
        print(f"load average (1/5/15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
              f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs")
        print(f"{'method':<34}{'instances':>10}{'best s':>9}{'median s':>10}{'peak MB':>9}{'import MB':>10}"
              f"{'MB over import':>15}{'time / medseg':>14}")
        best_medseg = min(r["seconds"] for r in results["medseg"])
        for m in methods:
            rs = results[m]
            secs = sorted(r["seconds"] for r in rs)
            peak = max(r["peak_mb"] for r in rs)
            base = min(r["base_mb"] for r in rs)
            label = "medseg fetch_series (to disk)" if m == "medseg" else f"dicomweb-client {m}"
            print(f"{label:<34}{rs[0]['instances']:>10}{secs[0]:>9.2f}{secs[len(secs) // 2]:>10.2f}{peak:>9.0f}"
                  f"{base:>10.0f}{peak - base:>15.0f}{secs[0] / best_medseg:>14.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
