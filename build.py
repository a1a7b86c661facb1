#!/usr/bin/env python3
"""Set up and drive the project from a machine that has only python3.

  python3 build.py demo [ARGS]     create .venv if missing, install, run `appliance demo ARGS`
  python3 build.py test [ARGS]     same set-up, then the whole test suite (pytest ARGS)
  python3 build.py bench NAME      run bench/NAME.py (prints one JSON object as its last line)
  python3 build.py setup           only create and install .venv
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"
CACHE = ROOT / ".cache" / "numba"


def log(msg: str) -> None:
    print(f"build.py: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def setup(extras: str = "test") -> None:
    """Create .venv if missing and (re)install the project and its pinned dependencies when pyproject changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"build.py: Python >= 3.11 is required, this is {sys.version.split()[0]}")
    if not PY.exists():
        log(f"creating {VENV}")
        if run([sys.executable, "-m", "venv", VENV]) != 0:
            sys.exit("build.py: could not create the virtual environment (on Debian: apt-get install python3-venv)")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    have = STAMP.read_text().split() if STAMP.exists() else []
    if have[:1] == [want] and set(extras.split(",")) <= set(have[1:]):
        return
    extras = ",".join(sorted(set(extras.split(",")) | (set(have[1:]) if have[:1] == [want] else set())))
    log("installing the project and its pinned dependencies into .venv")
    pip = [PY, "-m", "pip", "--disable-pip-version-check", "-q"]
    if run(pip + ["install", "-e", f"{ROOT}[{extras}]"]) != 0:
        sys.exit("build.py: pip install failed (see above)")
    STAMP.write_text(" ".join([want, *extras.split(",")]))


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("APPLIANCE_CACHE_DIR", str(CACHE))  # compiled kernels survive between runs
    e["PYTHONUNBUFFERED"] = "1"
    return e


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in ("setup", "demo", "test", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    setup("test,bench" if cmd == "bench" else "test")  # the benchmarks also need their peers (Ray)
    if cmd == "setup":
        return 0
    if cmd == "demo":
        return run([PY, "-m", "appliance", "demo", *rest], env=env())
    if cmd == "test":
        return run([PY, "-m", "pytest", *rest], env=env())
    if not rest:
        names = sorted(p.stem.replace("_", "-") for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")
                       and p.stem != "ray_design")
        print(f"usage: python3 build.py bench NAME   (NAME: {', '.join(names)})", file=sys.stderr)
        return 2
    script = ROOT / "bench" / f"{rest[0].replace('-', '_')}.py"
    if not script.exists():
        print(f"build.py: no benchmark {rest[0]!r} (looked for {script})", file=sys.stderr)
        return 2
    return run([PY, script, *rest[1:]], env=env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
