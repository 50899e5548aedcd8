"""Test-only stand-in for ``sgl_kernel`` so a real SGLang server starts on a CPU-only machine.

Why this exists: PyPI's ``sglang-kernel`` wheel (the ``sgl_kernel`` module) is a CUDA build. Importing it on a
machine without a GPU driver fails (``libcuda.so.1`` missing), and SGLang imports it unconditionally from a few
modules even when it runs on the CPU. With this stand-in in ``sys.modules`` the module exists but exposes only
the ``*_cpu`` names that SGLang imports at module level (each raises if it is ever called) and looks absent for
everything else (``from sgl_kernel import x`` raises ImportError), so SGLang takes its torch-native paths
(attention backend ``torch_native``, sampling backend ``pytorch``). None of the stand-in's functions is called in
our tests; if one ever is, the call fails loudly instead of computing something wrong.

It is installed only when ``STREAMVOICE_SGL_KERNEL_STANDIN=1`` is set: the test fixtures put this directory on
``PYTHONPATH`` and set that variable for the SGLang processes they start. It lives in tests/ only and is never
part of the shipped package; a GPU deployment uses the real ``sgl_kernel``.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from collections.abc import Callable
from typing import Any, NoReturn

ENV_SWITCH = "STREAMVOICE_SGL_KERNEL_STANDIN"
MODULE_NAME = "sgl_kernel"
CPU_SUFFIX = "_cpu"


def _refusing(name: str) -> Callable[..., NoReturn]:
    def kernel(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise RuntimeError(f"sgl_kernel stand-in: {name} was called; the CPU test rig must not need it")

    kernel.__name__ = name
    return kernel


class _StandIn(types.ModuleType):
    """A module whose only attributes are ``*_cpu`` kernels that refuse to run."""

    def __getattr__(self, name: str) -> Any:
        if name.endswith(CPU_SUFFIX) and not name.startswith("__"):
            return _refusing(name)
        raise AttributeError(f"sgl_kernel stand-in has no attribute {name!r} (CPU test rig)")


def install() -> None:
    """Put the stand-in into ``sys.modules`` (idempotent)."""
    if isinstance(sys.modules.get(MODULE_NAME), _StandIn):
        return
    module = _StandIn(MODULE_NAME, __doc__)
    # A spec without a loader: importlib.util.find_spec() answers instead of raising ValueError.
    module.__spec__ = importlib.machinery.ModuleSpec(MODULE_NAME, None)
    sys.modules[MODULE_NAME] = module


if os.environ.get(ENV_SWITCH) == "1":
    install()
