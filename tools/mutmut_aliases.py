"""A pytest plugin for mutmut runs (`pytest -p tools.mutmut_aliases`, set in pyproject's `[tool.mutmut]`).

The package installs its folders as `clip2video.<folder>` (pyproject's `package-dir`), and the tests import them by
that name. mutmut copies the folders it mutates into `mutants/<folder>/` and names every mutant after the file's path
(`processing.url_fetching_clip2video.x_fetch_url__mutmut_3`); its trampolines record which tests reach a function
under `function.__module__`. Imported as `clip2video.processing...`, the copy would be a second module whose functions
no mutant name matches (mutmut stops: "tests recorded trampoline hits but none match any mutant key"), and the
editable install would serve the unmutated working tree besides.

So, for every folder mutmut copied next to this run (`mutants/<folder>/__init__.py`), `clip2video.<folder>.<rest>`
is the module `<folder>.<rest>` itself: one module object under both names, its functions' `__module__` the path
name mutmut expects, its code the mutated copy. Folders mutmut did not copy still import from the installed package.
"""

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path


PREFIX = "clip2video."
ROOT = Path.cwd()  # mutmut runs pytest inside `mutants/`


class _Existing(importlib.abc.Loader):
    """Loads a module that is already imported under another name."""

    def __init__(self, module):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        # The import system has just set the alias's spec on the module: give it back its own, whose locations
        # `importlib.resources.files` reads (the publishing code finds the files a checkpoint carries that way).
        module.__spec__ = self.spec


class MutantAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(PREFIX):
            return None
        name = fullname[len(PREFIX):]
        if not (ROOT / name.split(".")[0] / "__init__.py").is_file():
            return None
        module = importlib.import_module(name)
        spec = importlib.util.spec_from_loader(fullname, _Existing(module), is_package=hasattr(module, "__path__"))
        return spec


if not any(isinstance(finder, MutantAliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, MutantAliasFinder())
