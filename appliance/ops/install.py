"""`appliance install --systemd`: put the binary, the unit, its drop-ins, the user and the config in place.

The files come from the repository's systemd/ and config/ directories, which the frozen binary
carries (build.py FROZEN_DATA), so the binary can install itself on a host that has nothing else.
"""

import argparse
import grp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DESCRIPTION = """\
Install the appliance as a systemd service on this host (or into the root file system DIR):

  /usr/local/bin/appliance                              the binary (--binary; default: this binary)
  /etc/systemd/system/appliance.service                 the unit
  /etc/systemd/system/appliance.service.d/10-cpu.conf   CPUAffinity= for this host (--cpus)
  /etc/sysusers.d/appliance.conf                        the unprivileged user `appliance`
  /etc/sysctl.d/60-appliance.conf                       HugePages (sized for the config) and kernel settings
  /etc/appliance/appliance.toml                         the config (--config; never overwritten)

then, unless --root is given, create the user, apply the kernel settings and reload systemd.
Run it again after a new binary or to change --cpus: everything but the config is replaced.
"""

EPILOG = """\
examples:
  sudo ./appliance install --systemd --config my.toml         install this binary and my.toml
  sudo ./appliance install --systemd --cpus 0-1,2-5 --now     hot cores 2-5 (isolcpus), then start it
  appliance install --systemd --dry-run                       show what would be done
  appliance install --systemd --root /srv/image --binary dist/appliance   into an image, nothing run

exit status: 0 installed; 1 a step failed (named); 2 bad usage or config.
"""

BIN_PATH = "usr/local/bin/appliance"
UNIT_DIR = "etc/systemd/system"
UNIT = "appliance.service"
CONFIG_PATH = "etc/appliance/appliance.toml"
SYSUSERS_PATH = "etc/sysusers.d/appliance.conf"
SYSCTL_PATH = "etc/sysctl.d/60-appliance.conf"
USER = "appliance"


class InstallError(Exception):
    """A step that could not be done; the message names it and what to do."""


def data_dir(name: str) -> Path:
    """A directory the binary carries (systemd/, config/): next to the package from source, in _MEIPASS frozen."""
    base = Path(getattr(sys, "_MEIPASS", "")) if getattr(sys, "frozen", False) else Path(__file__).resolve().parents[2]
    path = base / name
    if not path.is_dir():
        raise InstallError(
            f"{path} is missing: the install files ship in the repository's {name}/ directory and in the binary "
            "built by `python3 build.py binary`; run install from one of those"
        )
    return path


def online_cpus(sysfs: str = "/sys/devices/system/cpu") -> str:
    """The kernel's online CPU list, e.g. "0-7" (isolated cores included)."""
    with open(os.path.join(sysfs, "online")) as f:
        return f.read().strip()


def parse_cpus(text: str) -> list[int]:
    """"0-1,4 6" -> [0, 1, 4, 6]; raises ValueError on anything else."""
    from ..runtime.cpu import parse_cpulist

    cpus = parse_cpulist(text.replace(" ", ","))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return sorted(cpus)


def cpu_dropin(cpus: list[int], source: str) -> str:
    from ..runtime.cpu import format_cpulist

    return (
        "# Written by `appliance install --systemd`"
        f" ({source}). The CPUs the appliance may use: control and hot cores\n"
        "# together; it pins each hot thread to one of them (isolated ones first) and keeps its control\n"
        "# plane on the others (cpu.control). Rewrite with `appliance install --systemd --cpus LIST`.\n"
        "[Service]\n"
        f"CPUAffinity={format_cpulist(cpus).replace(',', ' ')}\n"
    )


def hugepages_needed(cfg) -> int:
    """2 MiB pages the config's arena takes (what memory.require_hugepages would demand)."""
    from ..runtime.layout import compute_layout

    return compute_layout(cfg.hot_threads(), cfg.runtime.ring_slots, cfg.journal.ring_slots).hugepages


def sysctl_text(template: str, pages: int) -> str:
    out, done = [], False
    for line in template.splitlines():
        if line.startswith("vm.nr_hugepages"):
            line, done = f"vm.nr_hugepages = {pages}", True
        out.append(line)
    if not done:
        raise InstallError("systemd/sysctl.d/60-appliance.conf has no vm.nr_hugepages line to size")
    return "\n".join(out) + "\n"


class Installer:
    """Plans and performs the install; with dry_run it only says what it would do."""

    def __init__(self, root: Path, dry_run: bool):
        self.root = root
        self.dry_run = dry_run
        self.live = root == Path("/")

    def at(self, rel: str) -> Path:
        return self.root / rel

    def say(self, text: str) -> None:
        print(("would " if self.dry_run else "") + text)

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        self.say(f"write {self.at(rel)}")
        if not self.dry_run:
            self._atomic(self.at(rel), lambda f: f.write(text.encode()), mode)

    def copy(self, src: Path, rel: str, mode: int, label: str = "") -> None:
        self.say(f"copy {label or src} -> {self.at(rel)}")
        if self.dry_run:
            return

        def fill(f):
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f, 1 << 20)

        dest = self._atomic(self.at(rel), fill, mode)
        # Keep the mtime: the copy is the same build (its kernel cache is keyed on the build id inside it,
        # not on the file), and `ls -l` should say when it was built, not when it was installed.
        st = os.stat(src)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _atomic(self, dest: Path, fill, mode: int) -> Path:
        # Write beside, then rename: a running service keeps its old binary, a crash leaves no half file.
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return dest

    def run(self, cmd: list[str], why: str) -> None:
        self.say("run " + " ".join(cmd) + f"   ({why})")
        if self.dry_run:
            return
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise InstallError(f"`{' '.join(cmd)}` ({why}) exited {p.returncode}: {(p.stderr or p.stdout).strip()}")

    def group_id(self, name: str) -> int | None:
        """gid of `name` in the target root's /etc/group (not the host's when --root is given)."""
        if self.live:
            try:
                return grp.getgrnam(name).gr_gid
            except KeyError:
                return None
        try:
            for line in self.at("etc/group").read_text().splitlines():
                fields = line.split(":")
                if len(fields) >= 3 and fields[0] == name:
                    return int(fields[2])
        except OSError:
            pass
        return None


def install(args) -> list[str]:
    """Perform the install; returns the next steps to print."""
    from ..cli import load_or_exit

    inst = Installer(Path(args.root or "/"), args.dry_run)
    frozen = getattr(sys, "frozen", False)
    binary = Path(args.binary) if args.binary else (Path(sys.executable) if frozen else None)
    if binary is None:
        raise UsageError("running from source: pass --binary PATH (build one with `python3 build.py binary`)")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise UsageError(f"--binary {binary}: not an executable file")
    systemd_dir = data_dir("systemd")

    # The config to install, validated before anything is written (exit 2 naming the bad keys).
    config_src = Path(args.config) if args.config else data_dir("config") / "appliance.toml"
    if not config_src.is_file():
        raise UsageError(f"--config {config_src}: no such file")
    cfg = load_or_exit(str(config_src), "appliance install")

    if args.cpus:
        try:
            cpus, cpu_source = parse_cpus(args.cpus), f"--cpus {args.cpus}"
        except ValueError as e:
            raise UsageError(f"--cpus: {e}") from None
    else:
        cpus, cpu_source = parse_cpus(online_cpus()), "every online CPU of the host it ran on"
    pages = args.hugepages if args.hugepages is not None else hugepages_needed(cfg)

    if inst.live and not args.dry_run and os.geteuid() != 0:
        raise InstallError("installing into / needs root: run it with sudo (or pass --root DIR, or --dry-run)")

    inst.copy(binary, BIN_PATH, 0o755)
    inst.write(f"{UNIT_DIR}/{UNIT}", (systemd_dir / UNIT).read_text())
    inst.write(f"{UNIT_DIR}/{UNIT}.d/10-cpu.conf", cpu_dropin(cpus, cpu_source))
    inst.write(SYSUSERS_PATH, (systemd_dir / "sysusers.d" / "appliance.conf").read_text())
    inst.write(SYSCTL_PATH, sysctl_text((systemd_dir / "sysctl.d" / "60-appliance.conf").read_text(), pages))

    # The user first: the config is shared with its group.
    sysusers = shutil.which("systemd-sysusers")
    next_steps = []
    if sysusers:
        cmd = [sysusers] + ([] if inst.live else [f"--root={inst.root}"]) + [str(inst.at(SYSUSERS_PATH))]
        inst.run(cmd, f"create the {USER} user")
    else:
        next_steps.append(f"create the user: systemd-sysusers {inst.at(SYSUSERS_PATH)} (systemd-sysusers not found here)")

    config_dest = inst.at(CONFIG_PATH)
    if config_dest.exists():
        print(f"kept {config_dest} (an existing config is never overwritten; "
              f"{'the --config given was not installed' if args.config else 'compare with the reference config'})")
    else:
        inst.copy(config_src, CONFIG_PATH, 0o640, "" if args.config else "the reference config (every key at its default)")
        gid = inst.group_id(USER)
        if gid is None:
            if not args.dry_run:
                next_steps.append(f"let the service read its config: chgrp {USER} /{CONFIG_PATH}")
        elif not args.dry_run and os.geteuid() == 0:
            # root:appliance 0640: the venue password in it is for the service, not every local user.
            os.chown(config_dest, 0, gid)
            os.chown(config_dest.parent, 0, gid)
            os.chmod(config_dest.parent, 0o750)

    if inst.live:
        if Path("/run/systemd/system").is_dir():
            inst.run(["sysctl", "--load", str(inst.at(SYSCTL_PATH))], "reserve HugePages and apply the kernel settings")
            inst.run(["systemctl", "daemon-reload"], "load the new unit")
            if args.now:
                inst.run(["systemctl", "enable", "--now", UNIT], "start it now and at every boot")
            else:
                next_steps.append(f"start it now and at every boot: systemctl enable --now {UNIT}")
        else:
            next_steps.append("systemd is not running on this host: boot it under systemd, then "
                              f"`systemctl enable --now {UNIT}`")
    else:
        next_steps.append(f"in the system booted from {inst.root}: systemctl enable --now {UNIT} "
                          f"(or: systemctl --root={inst.root} enable {UNIT})")
    next_steps += [
        f"check the node: appliance doctor -c /{CONFIG_PATH}",
        f"follow it: journalctl -u {UNIT} -f; systemctl status {UNIT}",
        f"adjust the unit: systemctl edit {UNIT} (a drop-in survives reinstalls)",
    ]
    if pages:
        next_steps.append(f"HugePages: {pages} x 2 MiB reserved by /{SYSCTL_PATH}; on long-running hosts add "
                          f"hugepages={pages} to the kernel command line (reserved before memory fragments)")
    return next_steps


class UsageError(Exception):
    """Bad arguments: exit 2."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="appliance install", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systemd", action="store_true", required=True,
                   help="install the systemd service (the only kind of install there is; required for clarity)")
    p.add_argument("--root", metavar="DIR", help="install into this root file system and run nothing there "
                   "but systemd-sysusers --root (an image, a container); default /")
    p.add_argument("--binary", metavar="PATH", help="the binary to install (default: the running binary; "
                   "required from source)")
    p.add_argument("-c", "--config", metavar="FILE", help="config to install as /etc/appliance/appliance.toml if "
                   "none is there (default: the reference config, every key at its default)")
    p.add_argument("--cpus", metavar="LIST", help="CPUs the service may use, control and hot cores together, "
                   "e.g. 0-1,2-5 (default: every online CPU)")
    p.add_argument("--hugepages", metavar="N", type=int, help="vm.nr_hugepages to reserve (default: what the "
                   "config's arena needs)")
    p.add_argument("--now", action="store_true", help="also `systemctl enable --now` the service (not with --root)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    args = p.parse_args(argv)
    if args.now and args.root:
        p.error("--now starts the service on this host; with --root nothing is started")
    if args.hugepages is not None and args.hugepages < 0:
        p.error("--hugepages must be >= 0")
    try:
        steps = install(args)
    except UsageError as e:
        print(f"appliance install: {e}", file=sys.stderr)
        return 2
    except (InstallError, OSError) as e:
        print(f"appliance install: failed: {e}", file=sys.stderr)
        return 1
    if steps:
        print("\nnext:" if not args.dry_run else "\nthen:")
        for s in steps:
            print(f"  {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
