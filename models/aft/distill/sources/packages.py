"""Debian packages as corpus inputs: fetched with `apt-get download` and unpacked with
`dpkg-deb -x` into a private folder, so that building the corpus installs nothing on the
system (no dependencies, no services, no upgrades of shared libraries).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

from aft.distill.sources.reserved import is_reserved_package


class MissingInputs(SystemExit):
    """A package or index the build needs is not there; the message says how to get it."""


def download(debs: Path, packages: list[str]) -> None:
    """`apt-get download` into debs; on a fresh machine the package lists can be older than the
    mirror (a candidate version the mirror no longer has), so one failure refreshes them with
    `apt-get update` and tries again."""
    cmd = ["apt-get", "download", *packages]
    print("+ (in", debs, ")", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=debs).returncode == 0:
        return
    print("+ apt-get update (the package lists are stale), then again", flush=True)
    if subprocess.run(["apt-get", "update", "-o", "Acquire::Languages=none"]).returncode != 0:
        raise MissingInputs("apt-get download failed and apt-get update too (run it as root)")
    subprocess.run(cmd, cwd=debs, check=True)


def fetch(base: Path, packages: list[str]) -> dict[str, dict]:
    """Download the .debs (latest candidate) into base/debs and unpack them into base/root."""
    reserved = [p for p in packages if is_reserved_package(p)]
    if reserved:
        raise ValueError(f"reserved test-domain packages may not be fetched: {reserved}")
    debs, root = base / "debs", base / "root"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    download(debs, packages)
    manifest = fetched(base)  # earlier fetches stay listed
    for pkg in packages:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            raise MissingInputs(f"apt-get download left no .deb for {pkg}")
        deb = found[-1]
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Version"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        info = dict(re.findall(r"^(\w+): (.*)$", fields, re.M))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        manifest[pkg] = {"version": info["Version"], "deb": deb.name}
    (base / "packages.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    write_file_lists(base)
    return manifest


def write_file_lists(base: Path) -> None:
    """base/lists/PKG.list: the files each fetched package ships, so that a source reads only
    its own package's files from the shared unpacked root (many put files in usr/share/info)."""
    lists = base / "lists"
    lists.mkdir(exist_ok=True)
    for pkg, info in fetched(base).items():
        out = lists / f"{pkg}.list"
        if out.exists():
            continue
        listing = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(base / "debs" / info["deb"])],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        names = tarfile.open(fileobj=io.BytesIO(listing)).getnames()
        paths = sorted(n.removeprefix("./") for n in names if n not in (".", "./"))
        out.write_text("\n".join(paths) + "\n")


def package_files(base: Path, pkg: str) -> set[str]:
    return set((base / "lists" / f"{pkg}.list").read_text().split("\n")) - {""}


def fetched(base: Path) -> dict[str, dict]:
    path = base / "packages.json"
    return json.loads(path.read_text()) if path.exists() else {}


def require(base: Path, packages: list[str], fetch_cmd: str) -> None:
    have = fetched(base)
    missing = [p for p in packages if p not in have or not (base / "lists" / f"{p}.list").exists()]
    if missing:
        raise MissingInputs(
            f"packages not fetched yet: {' '.join(missing)}\n"
            f"run: {fetch_cmd}\n"
            f"(that runs `apt-get download {' '.join(missing)}` and unpacks them under {base};"
            " nothing is installed on the system)"
        )


def licence(root: Path, pkg: str) -> str:
    """The licence names of a package's copyright file: the DEP-5 `License:` fields (in order
    of first appearance), or, for a free-form file, the licence names it mentions."""
    folder = root / "usr/share/doc" / pkg
    path = folder / "copyright"
    if not path.exists():
        if folder.is_symlink():  # Debian allows pointing at a dependency's folder
            return f"see {folder.readlink().name} (not fetched)"
        return "unknown (no copyright file)"
    text = path.read_text(encoding="utf-8", errors="replace")
    names: list[str] = []
    main = None
    for stanza in re.split(r"\n\s*\n", text):
        m = re.search(r"^License:[ \t]*(\S.*)$", stanza, re.M)
        if not m:
            continue
        name = m.group(1).strip()
        if main is None and re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            main = name  # the stanza for the package as a whole
        if name not in names:
            names.append(name)
    if names:
        rest = [n for n in names if n != main]
        if main:
            return main + (f" (other files: {'; '.join(rest)})" if rest else "")
        return "; ".join(names)
    known = [
        ("GPL-3", r"GNU General Public License.{0,40}version 3|GPL-?3"),
        ("GPL-2", r"GNU General Public License.{0,40}version 2|GPL-?2"),
        ("GPL", r"GNU General Public License|\bGPL\b"),
        ("LGPL", r"GNU Lesser General Public|GNU Library General Public|\bLGPL"),
        ("GFDL", r"GNU Free Documentation License"),
        ("Artistic", r"Artistic License"),
        ("BSD", r"\bBSD\b"),
        ("MIT", r"\bMIT\b|Permission is hereby granted, free of charge"),
        ("public domain", r"public domain"),
        ("OPL", r"Open Publication License"),
        ("CC-BY-SA", r"Creative Commons Attribution[- ]Share ?Alike"),
        ("permissive notice", r"Permission is granted to make and distribute verbatim copies"),
    ]
    flat = re.sub(r"\s+", " ", text)
    found = [name for name, pat in known if re.search(pat, flat, re.I)]
    return "; ".join(found) if found else "see copyright file"
