"""Boot one of Debian's kernels under qemu (TCG) with the host's / as a read-only 9p root.

The guest runs a bash script (run.sh) from a read-write 9p share and leaves its exit code
there; see init.sh for the guest's side. Standard library only.
"""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("SOCKSCOPE_VMTEST_CACHE", "/var/cache/sockscope-vmtest"))
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"

# Modules the guest loads, with their dependencies from modules.dep. The names are those of
# modprobe; a name built into a kernel (modules.builtin) is skipped there.
#   virtio_pci: the PCI transport of the 9p devices (a module on 6.1, built in on 6.12);
#   9pnet_virtio, 9p: the root and results file systems;
#   veth: the tests' network namespace is joined to the host by a veth pair.
# af_packet, ipv6 and io_uring are built into both kernels; the tests use no netfilter.
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "veth"]


@dataclass(frozen=True)
class Kernel:
    series: str  # "6.1", "6.12"
    release: str  # uname -r, e.g. 6.1.0-56-amd64
    root: Path  # the unpacked package: boot/vmlinuz-RELEASE, lib/modules/RELEASE

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def fetch_kernels(series: list[str]) -> dict[str, Kernel]:
    """Download and unpack (or find cached) kernels: fetch-kernels.sh does the apt part."""
    out = subprocess.run(
        ["bash", str(HERE / "fetch-kernels.sh"), *series],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SOCKSCOPE_VMTEST_CACHE": str(CACHE)},
    ).stdout
    kernels: dict[str, Kernel] = {}
    for line in out.splitlines():
        s, release, root = line.split(maxsplit=2)
        kernels[s] = Kernel(s, release, Path(root))
    return kernels


def _modname(path: str) -> str:
    name = Path(path).name
    for ext in (".xz", ".zst", ".gz"):
        name = name.removesuffix(ext)
    return name.removesuffix(".ko").replace("-", "_")


def module_order(kernel: Kernel, wanted: list[str]) -> list[str]:
    """Paths (relative to the modules dir) of `wanted` and their deps, dependencies first."""
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        paths[_modname(mod)] = mod
        deps[_modname(mod)] = [_modname(d) for d in rest.split()]
    builtin = {_modname(p) for p in (kernel.modules / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for d in deps[name]:
            visit(d)
        order.append(name)

    for name in wanted:
        name = name.replace("-", "_")
        if name in paths:
            visit(name)
        elif name not in builtin:
            raise RuntimeError(f"{kernel.release}: module {name} neither in modules.dep nor built in")
    return [paths[n] for n in order]


def build_initramfs(kernel: Kernel, out: Path) -> Path:
    """A cpio of a static busybox, init.sh as /init, and the modules (decompressed) in order."""
    tree = out / f"initramfs-{kernel.release}"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev", "modules", "newroot"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    shutil.copy2(HERE / "init.sh", tree / "init")
    (tree / "init").chmod(0o755)
    names = []
    for rel in module_order(kernel, MODULES):
        src = kernel.modules / rel
        name = _modname(rel) + ".ko"
        # busybox insmod cannot read .ko.xz (6.12 ships them so): decompress here.
        data = lzma.decompress(src.read_bytes()) if rel.endswith(".xz") else src.read_bytes()
        (tree / "modules" / name).write_bytes(data)
        names.append(name)
    (tree / "modules" / "order").write_text("".join(n + "\n" for n in names))
    cpio = out / f"initramfs-{kernel.release}.cpio"
    files = subprocess.run(["find", "."], cwd=tree, check=True, stdout=subprocess.PIPE).stdout
    with cpio.open("wb") as f:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=tree, input=files, stdout=f, check=True
        )
    shutil.rmtree(tree)
    return cpio


@dataclass
class Boot:
    rc: int | None  # run.sh's exit code; None when the guest never wrote it
    timed_out: bool
    seconds: float
    console: Path


def qemu_argv(kernel: Kernel, initrd: Path, share: Path, serial: str, cpus: int, mem_mb: int) -> list[str]:
    # SOCKSCOPE_VMTEST_APPEND: extra kernel parameters, for experiments.
    # loglevel=5: KERN_WARNING and worse reach the console (WARN() splats, not boot chatter).
    if any(c.isspace() or c == "," for c in str(REPO)):
        # Neither the kernel's command line nor qemu's -virtfs option can carry them.
        raise SystemExit(f"vmtest: the repository's path may not hold white space or commas: {REPO}")
    # vmtest.repo: init.sh mounts the repository (its own share) at the same path, after its
    # tmpfs on /tmp and /run, which would hide a clone made there (CI may clone anywhere).
    extra = os.environ.get("SOCKSCOPE_VMTEST_APPEND", "")
    append = f"console=ttyS0 panic=-1 loglevel=5 vmtest.repo={REPO} {extra}".strip()
    return [
        QEMU,
        "-machine", "q35,accel=tcg",  # KVM here is paravirtual and runs only its own guests
        "-cpu", "max",
        "-smp", str(cpus),
        "-m", str(mem_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", serial,
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initrd),
        "-append", append,
        "-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={share},mount_tag=results,security_model=none,multidevs=remap",
        "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on,multidevs=remap",
    ]  # fmt: skip


def boot(
    kernel: Kernel,
    initrd: Path,
    share: Path,
    script: str,
    timeout: float,
    cpus: int = 1,
    mem_mb: int = 2048,
    live: bool = False,
) -> Boot:
    """Boot, run `script` (bash, in the guest) from `share`, and collect its exit code.

    The console goes to share/console.log, or to our stdout with live=True.
    """
    share.mkdir(parents=True, exist_ok=True)
    (share / "rc").unlink(missing_ok=True)
    (share / "run.sh").write_text(script)
    console = share / "console.log"
    serial = "stdio" if live else f"file:{console}"
    # --foreground: qemu stays in our process group, so stopping the matrix's group stops it too.
    argv = ["timeout", "--foreground", "--kill-after=10", str(int(timeout)),
            *qemu_argv(kernel, initrd, share, serial, cpus, mem_mb)]  # fmt: skip
    t0 = time.monotonic()
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=None if live else subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    rc_file = share / "rc"
    rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
    return Boot(rc=rc, timed_out=res.returncode in (124, 137), seconds=seconds, console=console)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"
