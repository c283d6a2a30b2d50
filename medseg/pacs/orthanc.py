"""A private Orthanc for tests and benchmarks: started as a child process, stopped by its PID.

Debian's ``orthanc`` + ``orthanc-dicomweb`` are used with a config of their own: only the
DICOMweb plugin, storage in a given folder, authentication on with one user, remote access
off, ``DicomAlwaysAllow*`` off, one DICOM modality (medseg's calling AE title) allowed
C-ECHO, C-FIND, C-GET and C-STORE on the DICOM port. Orthanc 1.10 binds 0.0.0.0, so where the machine allows it
(root, ``unshare -n``) it runs in a network namespace with only loopback, reached through a
forwarder thread per port (HTTP, DICOM) that connects from inside that namespace; elsewhere it runs on free
loopback ports of this host.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from medseg.pacs.errors import PacsError

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
AET = "ORTHANC"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def find_orthanc() -> tuple[str, str] | None:
    """``(Orthanc executable, DICOMweb plugin .so)``, or None when either is not installed."""
    exe = shutil.which("Orthanc")
    if not exe:
        return None
    candidates: list[str] = []
    try:
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=20)
        candidates = [line for line in listing.stdout.splitlines() if "DicomWeb" in line and ".so" in line]
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in PLUGIN_DIRS:
        if os.path.isdir(folder):
            candidates += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if "DicomWeb" in n]
    plugin = next((c for c in candidates if os.path.isfile(c)), None)
    return (exe, plugin) if plugin else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def netns_available() -> bool:
    """Whether ``unshare -n`` works here and this process may enter the namespace (root)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        return subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class _Forwarder:
    """127.0.0.1:port on this host -> 127.0.0.1:target inside another network namespace.

    The listening socket is made here; the accepting thread then enters the namespace
    (``setns`` moves only the calling thread), so the connections it opens, and the pump
    threads it starts, live there."""

    def __init__(self, netns: str, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._netns, self._target = netns, target_port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="orthanc-forwarder", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self._netns, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                log.error("setns failed: errno %d", ctypes.get_errno())
                return
        finally:
            os.close(fd)
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=10)
        except OSError:
            conn.close()
            return
        conn.setblocking(False)
        upstream.setblocking(False)
        peers = {conn: upstream, upstream: conn}
        sel = selectors.DefaultSelector()
        for s in peers:
            sel.register(s, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(1 << 18)
                    if not data:
                        return
                    dst = peers[src]
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            conn.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.listener.close()


class LocalOrthanc:
    """A private Orthanc serving ``workdir/storage``; ``dicomweb_url`` and ``rest_url`` once started.

    Args:
        workdir: folder for the config, the storage and the log.
        user, password: the one registered user (authentication is on).
        netns: run in a loopback-only network namespace: True, False, or None (when available).
        options: extra Orthanc configuration keys (e.g. ``{"LimitFindResults": 4}``).
        calling_ae: the one DICOM modality Orthanc knows (C-ECHO, C-FIND, C-GET, C-STORE allowed
            from it; C-MOVE not): ``dicom_url`` is Orthanc's DICOM port (AE title ``ORTHANC``).
    """

    def __init__(self, workdir: str | os.PathLike[str], *, user: str = "medseg", password: str = "medseg-test",
                 netns: bool | None = None, options: dict[str, Any] | None = None,
                 calling_ae: str = "MEDSEG") -> None:
        found = find_orthanc()
        if not found:
            raise PacsError("Orthanc with the DICOMweb plugin is not installed "
                            "(Debian: apt-get install orthanc orthanc-dicomweb; make apt-deps does it)")
        self.exe, self.plugin = found
        self.workdir = Path(workdir)
        self.user, self.password = user, password
        self.netns = netns_available() if netns is None else netns
        self.options = dict(options or {})
        self.calling_ae = calling_ae
        self.process: subprocess.Popen[bytes] | None = None
        self._forwarders: list[_Forwarder] = []
        self.port = 0
        self.dicom_port = 0

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def dicom_url(self) -> str:
        """Orthanc's DICOM (DIMSE) service as medseg names it: ``dicom://ORTHANC@127.0.0.1:port``."""
        return f"dicom://{AET}@127.0.0.1:{self.dicom_port}"

    def _config(self, http_port: int, dicom_port: int) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medseg-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": http_port, "DicomPort": dicom_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {self.user: self.password},
            "Plugins": [self.plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False, "DicomAet": AET,
            "DicomModalities": {"medseg": {"AET": self.calling_ae, "Host": "127.0.0.1", "Port": 104,
                                           "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                                           "AllowStore": True, "AllowMove": False}},
            "StorageCompression": False, "HttpCompressionEnabled": False, "ExecuteLuaEnabled": False,
            "ConcurrentJobs": 1, "HttpThreadsCount": 8, "SaveJobs": False, **self.options,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        path.chmod(0o600)
        return path

    def start(self, timeout_s: float = 60.0) -> "LocalOrthanc":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.netns:
            http_port, dicom_port = random.sample(range(20000, 60000), 2)
        else:
            http_port, dicom_port = _free_port(), _free_port()
        config = self._config(http_port, dicom_port)
        cmd = [self.exe, str(config)]
        if self.netns:
            cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', *cmd]
        logfile = open(self.workdir / "orthanc.log", "wb")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logfile.close()
        try:
            if self.netns:
                self._wait_netns(timeout_s)
                netns = f"/proc/{self.process.pid}/ns/net"
                self._forwarders = [_Forwarder(netns, http_port), _Forwarder(netns, dicom_port)]
                self.port, self.dicom_port = (f.port for f in self._forwarders)
            else:
                self.port, self.dicom_port = http_port, dicom_port
            self._wait_system(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("Orthanc pid %d on %s (%s)", self.process.pid, self.rest_url,
                 "loopback-only network namespace" if self.netns else "host loopback")
        return self

    def _wait_netns(self, timeout_s: float) -> None:
        """Until the child's network namespace differs from ours (unshare has run)."""
        assert self.process is not None
        ours = os.readlink("/proc/self/ns/net")
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._check_alive()
            try:
                if os.readlink(f"/proc/{self.process.pid}/ns/net") != ours:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise PacsError("Orthanc did not enter its network namespace")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.workdir / "orthanc.log").read_text(errors="replace")[-1500:]
            raise PacsError(f"Orthanc exited with status {self.process.returncode}:\n{tail}")

    def _wait_system(self, timeout_s: float) -> None:
        import requests

        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._check_alive()
            try:
                if requests.get(f"{self.rest_url}/system", auth=(self.user, self.password), timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise PacsError(f"Orthanc did not answer /system within {timeout_s:g} s")

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call to Orthanc's own REST API (not DICOMweb), authenticated."""
        import requests

        response = requests.request(method, f"{self.rest_url}{path}", auth=(self.user, self.password),
                                    timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def upload(self, *files: str | os.PathLike[str]) -> None:
        """Store DICOM files through ``POST /instances``."""
        for f in files:
            self.rest("POST", "/instances", data=Path(f).read_bytes())

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for patient in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient}")

    def stop(self, timeout_s: float = 20.0) -> None:
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders = []
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> "LocalOrthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalOrthanc", "find_orthanc", "netns_available"]
