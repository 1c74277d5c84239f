"""The release artifact (CONTRACT §7): a tar.gz whose root holds a Procfile with a `web:` line.

Building is deterministic (sorted entries, fixed owners and times), so the same source tree
always gives the same bytes and the same content-hashed name. Unpacking refuses any entry
that would land outside the destination.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
from pathlib import Path
from urllib.parse import unquote, urlparse

PROCFILE = "Procfile"
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+?)\s*$")
_SKIPPED_NAMES = {"__pycache__", ".git", ".venv", "node_modules", ".DS_Store"}


class ArtifactError(ValueError):
    """The source tree or artifact is not a valid release artifact."""


def parse_procfile(text: str) -> dict[str, str]:
    """Map each process type to its command.

    >>> parse_procfile("web: python3 app.py\\n# comment\\nworker: celery\\n")
    {'web': 'python3 app.py', 'worker': 'celery'}
    """
    processes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _PROCFILE_LINE.fullmatch(line.strip())
        if match:
            processes[match.group(1)] = match.group(2)
    return processes


def web_command(procfile_text: str) -> str:
    command = parse_procfile(procfile_text).get("web")
    if not command:
        raise ArtifactError("Procfile has no `web:` line")
    return command


def _files(source: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_NAMES)
        for name in sorted(files):
            if name in _SKIPPED_NAMES or name.endswith(".pyc"):
                continue
            found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def build_artifact(source_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Package `source_dir` into `out_dir/<name>-<sha256 prefix>.tar.gz` and return its path."""
    source = Path(source_dir).resolve()
    procfile = source / PROCFILE
    if not procfile.is_file():
        raise ArtifactError(f"{source} has no {PROCFILE} at its root")
    web_command(procfile.read_text(encoding="utf-8"))

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(source):
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    # mtime=0 and no file name keep the gzip header, and so the hash, reproducible.
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    payload = compressed.getvalue()
    digest = hashlib.sha256(payload).hexdigest()[:16]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{source.name}-{digest}.tar.gz"
    if not target.exists():
        temporary = target.with_suffix(".partial")
        temporary.write_bytes(payload)
        temporary.replace(target)
    return target


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, as 64 lowercase hex characters (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_url(url: str) -> str:
    """The SHA-256 of a local artifact named by a `file:///` URL; ArtifactError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ArtifactError(f"cannot compute the digest of {url}: only file:/// artifacts are read locally")
    try:
        return sha256_of_file(unquote(parsed.path))
    except OSError as exc:  # permanent: the file is missing or unreadable
        raise ArtifactError(f"cannot read {url}: {exc}") from exc


def unpack_artifact(artifact: str | os.PathLike[str], destination: str | os.PathLike[str]) -> str:
    """Unpack into `destination` and return the Procfile's `web:` command."""
    dest = Path(destination).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(artifact, mode="r:gz") as tar:
            # The "data" filter refuses absolute paths, `..`, links out of the tree and devices.
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"cannot unpack {artifact}: {exc}") from exc
    procfile = dest / PROCFILE
    if not procfile.is_file():
        raise ArtifactError(f"{artifact} has no {PROCFILE} at its root")
    return web_command(procfile.read_text(encoding="utf-8"))
