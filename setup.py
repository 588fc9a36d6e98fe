"""Build threadws's optional C extension; the metadata lives in setup.cfg.

threadws._speedups (masking in C, threadws/_speedups.c) is built wherever a C
compiler works. Where none does, or the build fails, the install goes on
without it and says so in one line (pip shows build output with -v): threadws
then runs its pure-Python masking, which gives the same bytes, only slower.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

NOT_BUILT = "threadws: the C speedups (threadws._speedups) were not built; threadws will mask in pure Python. Cause: {}"


class optional_build_ext(build_ext):
    """build_ext that reports a failed build of the extension and carries on."""

    def run(self) -> None:
        try:
            super().run()
        except (BaseError, CCompilerError, OSError, ValueError) as exc:  # e.g. no usable compiler at all
            self.not_built(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (BaseError, CCompilerError, OSError, ValueError) as exc:
            self.not_built(exc)

    def not_built(self, exc: Exception) -> None:
        print(NOT_BUILT.format(str(exc).strip() or type(exc).__name__), file=sys.stderr, flush=True)


setup(
    # optional=True as well: an editable install then skips copying the missing file in place.
    ext_modules=[Extension("threadws._speedups", ["threadws/_speedups.c"], optional=True)],
    cmdclass={"build_ext": optional_build_ext},
)
