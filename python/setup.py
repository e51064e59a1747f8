"""pip install ./python: builds libgdn2.so with the project's Makefile (make -C <repo> lib-shared,
into <repo>/build/python; CUDA auto-detected by the Makefile: nvcc on PATH; GDN2_CUDA=0 / 1 forces
it, GDN2_MAKE_ARGS adds make arguments, GDN2_JOBS the parallel jobs) and ships it inside the
package as gdn2/libgdn2.so. The rest of the metadata is in pyproject.toml."""
import os
import shlex
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        if not os.path.exists(os.path.join(REPO, "Makefile")):
            raise RuntimeError("gdn2: the project's Makefile is not at %s: install from the repository "
                               "(pip install ./python)" % REPO)
        build = os.path.join(REPO, "build", "python")
        cmd = ["make", "-C", REPO, "lib-shared", "BUILD=" + build, "-j%s" % os.environ.get("GDN2_JOBS", os.cpu_count() or 2)]
        if os.environ.get("GDN2_CUDA") in ("0", "1"):
            cmd.append("CUDA=" + os.environ["GDN2_CUDA"])
        cmd += shlex.split(os.environ.get("GDN2_MAKE_ARGS", ""))
        print("gdn2: " + " ".join(cmd))
        subprocess.check_call(cmd)
        dest = os.path.join(self.build_lib, "gdn2")
        os.makedirs(dest, exist_ok=True)
        shutil.copyfile(os.path.join(build, "libgdn2.so"), os.path.join(dest, "libgdn2.so"))  # follows the links


setup(cmdclass={"build_py": BuildWithLibrary})
