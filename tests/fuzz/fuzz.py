"""A bounded mutation fuzzer of :func:`medseg.io.load` (issue 12).

Real seed files (scanner DICOM from ``../shared/data``, pydicom's and nibabel's test files, and an
NRRD and a MetaImage written by SimpleITK from nibabel's real anatomical image) are mutated with
byte flips, truncations, inserted/deleted bytes and header-field edits; each mutant is loaded in a
child forked from a fork server (a fresh interpreter that imported only the readers, so neither the
caller's threads nor its address space -- a pytest run that imported torch maps over 4 GB -- reach
the child), with 4 GB of address space above what the child starts with and a wall limit.
Outcomes per format:

* ``volume``: a Volume came back; ``medseg``: a medseg error (the wanted refusal);
* ``other``: any other exception; ``hang``: the wall limit passed; ``crash``: the child died.

Reproducers of the last three are written to ``--keep`` (default ``fuzz-findings/``).

    python -m tests.fuzz.fuzz --count 2000 --seed 1 --jobs 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
OUTCOMES = ("volume", "medseg", "other", "hang", "crash")
MEMORY_LIMIT = 4 << 30  # bytes of address space a child may map beyond its size at the fork
#: modules the fork server imports once (each child then starts in milliseconds)
PRELOAD = ("medseg.io", "medseg.io.dicom.decode", "medseg.io.itk", "medseg.io.nifti", "nibabel", "pydicom",
           "pydicom.pixels", "SimpleITK", "tests.fuzz.fuzz")
PYDICOM_SEEDS = ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "emri_small.dcm", "rtdose.dcm",
                 "SC_rgb_jpeg_gdcm.dcm", "JPEG-LL.dcm")
SHARED_SEEDS = ("dcm_qa_ts/In/1.dcm", "dcm_qa_ts/In/4.dcm", "dcm_qa_ts/In/6.dcm", "dcm_qa_ts/In/9.dcm")
INTERESTING_INTS = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)
INTERESTING_TEXT = ("-1", "0", "1e9", "4294967297", "nan", "inf", "-inf", "1e999", "", "../../etc/passwd",
                    "/etc/passwd", "LIST", "0 0 0", "1 1", "99999 99999 99999", "x")
#: DICOM tags whose values are worth editing (group, element), little-endian byte patterns
DICOM_TAGS = tuple(bytes([g & 0xFF, g >> 8, e & 0xFF, e >> 8]) for g, e in (
    (0x0028, 0x0008), (0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101),
    (0x0028, 0x0002), (0x0028, 0x0030), (0x0020, 0x0032), (0x0020, 0x0037), (0x0028, 0x0103),
    (0x0028, 0x1053), (0x0028, 0x0004), (0x7FE0, 0x0010), (0x0002, 0x0010), (0x0019, 0x100A),
    (0x5200, 0x9230), (0x0002, 0x0000), (0xFFFE, 0xE000)))


@dataclass(frozen=True)
class Seed:
    path: Path
    fmt: str  # dicom, nifti, nrrd, metaimage


def make_seeds(folder: Path) -> list[Seed]:
    """The seed files (NRRD/MHA written into ``folder`` from nibabel's real anatomical image)."""
    seeds: list[Seed] = []
    for rel in SHARED_SEEDS:
        if (SHARED / rel).is_file():
            seeds.append(Seed(SHARED / rel, "dicom"))
    try:
        from pydicom.data import get_testdata_file

        for name in PYDICOM_SEEDS:
            p = get_testdata_file(name)
            if p:
                seeds.append(Seed(Path(p), "dicom"))
    except ImportError:
        pass
    import nibabel

    anat = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    seeds.append(Seed(anat, "nifti"))
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # MetaIO warns about NIfTI-only metadata
    img = sitk.ReadImage(str(anat))
    folder.mkdir(parents=True, exist_ok=True)
    for name, fmt, compress in (("anat.nrrd", "nrrd", False), ("anat.mha", "metaimage", False),
                                ("anatz.nrrd", "nrrd", True)):
        sitk.WriteImage(img, str(folder / name), useCompression=compress)
        seeds.append(Seed(folder / name, fmt))
    return seeds


# -- mutations ------------------------------------------------------------------------------------
def _flip(data: bytearray, rng: random.Random) -> str:
    n = rng.choice((1, 1, 2, 4, 8, 32))
    limit = len(data) if rng.random() < 0.5 else min(len(data), 4096)
    for _ in range(n):
        data[rng.randrange(limit)] = rng.randrange(256)
    return f"flip{n}"


def _truncate(data: bytearray, rng: random.Random) -> str:
    cut = rng.randrange(1, len(data)) if rng.random() < 0.7 else len(data) - rng.randrange(1, 64)
    del data[max(1, cut):]
    return "truncate"


def _splice(data: bytearray, rng: random.Random) -> str:
    pos = rng.randrange(len(data))
    if rng.random() < 0.5:
        del data[pos:pos + rng.randrange(1, 64)]
        return "delete"
    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return "insert"


def _int_edit(data: bytearray, rng: random.Random) -> str:
    value = rng.choice(INTERESTING_INTS)
    width = rng.choice((2, 4))
    pos = rng.randrange(max(1, min(len(data), 2048) - width))
    data[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return f"int{width}"


def _dicom_field(data: bytearray, rng: random.Random) -> str:
    """Edit the length or value of one known DICOM element (explicit or implicit VR)."""
    tag = rng.choice(DICOM_TAGS)
    hits = [i for i in range(len(data) - 12) if data[i:i + 4] == tag][:8] if len(data) < 1 << 20 else []
    if not hits:
        return _int_edit(data, rng)
    pos = rng.choice(hits)
    choice = rng.random()
    if choice < 0.35:  # the 2-byte length of a short explicit element / part of the 4-byte one
        data[pos + 6:pos + 8] = rng.choice(INTERESTING_INTS).to_bytes(4, "little")[:2]
        return "dicom-len2"
    if choice < 0.6:
        data[pos + 4:pos + 8] = rng.choice(INTERESTING_INTS).to_bytes(4, "little")
        return "dicom-len4"
    value = rng.choice(INTERESTING_TEXT).encode() or b"\x00"
    data[pos + 8:pos + 8 + len(value)] = value
    return "dicom-value"


def _text_field(data: bytearray, rng: random.Random) -> str:
    """Replace the value of one line of a NRRD/MetaImage text header."""
    end = data.find(b"\n\n") if data.startswith(b"NRRD") else data.find(b"ElementDataFile")
    end = end if end > 0 else min(len(data), 1024)
    if data.find(b"ElementDataFile") > 0:
        end = data.find(b"\n", end) + 1 or end
    lines = bytes(data[:end]).split(b"\n")
    i = rng.randrange(len(lines))
    sep = b"=" if b"=" in lines[i] else b":"
    key = lines[i].split(sep)[0]
    lines[i] = key + sep + b" " + rng.choice(INTERESTING_TEXT).encode()
    data[:end] = b"\n".join(lines)
    return "header-field"


def mutate(raw: bytes, fmt: str, rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(raw)
    ops = [_flip, _truncate, _splice, _int_edit]
    ops.append(_dicom_field if fmt == "dicom" else _text_field if fmt in ("nrrd", "metaimage") else _int_edit)
    ops.append(ops[-1])  # header edits twice as likely
    names = [rng.choice(ops)(data, rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    return bytes(data), "+".join(names)


# -- running one mutant ---------------------------------------------------------------------------
def _mapped_bytes() -> int:
    """This process's address-space size (VmSize), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(path: str, conn) -> None:  # pragma: no cover - runs in the fork
    cap = _mapped_bytes() + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # native libraries print to fd 2 directly (GDCM, MetaIO, Rust panics)
    os.dup2(devnull, 1)
    os.environ["OMP_NUM_THREADS"] = "1"
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    from medseg.errors import MedsegError
    from medseg.io import load

    try:
        vol = load(path)
        conn.send(("volume", f"{vol.shape}"))
    except MedsegError as exc:
        conn.send(("medseg", f"{type(exc).__name__}: {str(exc)[:300]}"))
    except BaseException as exc:  # noqa: BLE001 - the point is to see every other kind
        conn.send(("other", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"))
    conn.close()
    os._exit(0)


def run_one(path: Path, *, timeout: float) -> tuple[str, str]:
    """Load ``path`` in a child of the fork server; (outcome, detail)."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(path), send))
    proc.start()
    send.close()
    result = None
    if recv.poll(timeout):
        try:
            result = recv.recv()
        except EOFError:
            result = None
    proc.join(5 if result is not None else 0.1)
    if proc.is_alive():
        proc.kill()
        proc.join()
        if result is None:
            return "hang", f"no result after {timeout:g} s"
    if result is None:
        return "crash", f"exit code {proc.exitcode}"
    return result


def _context():
    """The fork-server context, its server preloading :data:`PRELOAD` (started on first use).

    Forking the caller itself would copy its threads' held locks (a child of a full pytest run
    waited forever on one) and its whole address space into every child."""
    ctx = mp.get_context("forkserver")
    if str(REPO) not in sys.path:  # the server imports tests.fuzz.fuzz from the caller's sys.path
        sys.path.insert(0, str(REPO))
    ctx.set_forkserver_preload(list(PRELOAD))  # a module that fails to import is skipped by the server
    return ctx


def fuzz(count: int, *, seed: int, jobs: int, timeout: float, keep: Path | None, work: Path,
         formats: tuple[str, ...] | None = None, verbose: bool = False) -> dict[str, Counter]:
    """Run ``count`` mutants (spread over the seeds round-robin); the outcome counts per format."""
    seeds = [s for s in make_seeds(work / "seeds") if formats is None or s.fmt in formats]
    rng = random.Random(seed)
    table: dict[str, Counter] = defaultdict(Counter)
    suffix = {"dicom": ".dcm", "nifti": ".nii", "nrrd": ".nrrd", "metaimage": ".mha"}
    raws = {s.path: s.path.read_bytes() for s in seeds}
    pending: list[tuple[int, Seed, Path, str]] = []
    for n in range(count):
        s = seeds[n % len(seeds)]
        data, how = mutate(raws[s.path], s.fmt, rng)
        case = work / f"m{n:05d}" / f"case{suffix[s.fmt]}"
        case.parent.mkdir(parents=True, exist_ok=True)
        case.write_bytes(data)
        pending.append((n, s, case, how))

    def finish(item, outcome: str, detail: str) -> None:
        n, s, case, how = item
        table[s.fmt][outcome] += 1
        if verbose or outcome in ("other", "hang", "crash"):
            print(f"{outcome:7s} {s.path.name:22s} {how:28s} {detail}", file=sys.stderr)
        if outcome in ("other", "hang", "crash") and keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(case, keep / f"{outcome}-{s.fmt}-{seed}-{n:05d}{suffix[s.fmt]}")
            (keep / f"{outcome}-{s.fmt}-{seed}-{n:05d}.txt").write_text(f"{s.path.name} {how}\n{detail}\n")
        shutil.rmtree(case.parent, ignore_errors=True)

    if jobs <= 1:
        for item in pending:
            finish(item, *run_one(item[2], timeout=timeout))
        return table
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:  # threads only wait on forked children
        for item, res in zip(pending, pool.map(lambda it: run_one(it[2], timeout=timeout), pending)):
            finish(item, *res)
    return table


def format_table(table: dict[str, Counter]) -> str:
    rows = ["| format | mutants | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    total: Counter = Counter()
    for fmt in sorted(table):
        c = table[fmt]
        total.update(c)
        rows.append(f"| {fmt} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
    rows.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument("--timeout", type=float, default=20.0, help="wall limit per mutant, seconds")
    ap.add_argument("--keep", type=Path, default=Path("fuzz-findings"))
    ap.add_argument("--format", action="append", choices=("dicom", "nifti", "nrrd", "metaimage"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="medseg-fuzz-") as tmp:
        table = fuzz(args.count, seed=args.seed, jobs=args.jobs, timeout=args.timeout, keep=args.keep,
                     work=Path(tmp), formats=tuple(args.format) if args.format else None, verbose=args.verbose)
    load1 = os.getloadavg()
    print(format_table(table))
    print(f"\n{args.count} mutants, seed {args.seed}, {args.jobs} jobs, {time.time() - t0:.0f} s, "
          f"load average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    bad = sum(c[o] for c in table.values() for o in ("other", "hang", "crash"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
