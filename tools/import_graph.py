"""The import graph between the project's folders, and the layering rule it must follow.

    python tools/import_graph.py          # prints the folder-level graph and any violation (exit 1 if any)

Layers, lowest first (a folder may import its own layer's folders only where listed, and any lower layer):
    remote code   modeling_clip2video/, processing/  (copied flat into checkpoints: torch, transformers and the
                  standard library at module level, their own folder by relative import; optional packages only
                  inside functions or `try`; neither imports the other)
    library       pipelines/
    training      training/
    apps          apps/
Tests, benchmarks and tools may import anything. Files copied into checkpoints from other folders
(`pipelines/pipeline_clip2video.py`, the endpoint's `handler.py` and `serve.py`) follow the remote-code rule too.

A file path into another project folder counts as an import of it (`Path(__file__).parents[1] / "apps"`,
`os.path.join(root, "training", ...)`, `importlib.resources.files("clip2video.apps.endpoint")`): a lower layer reaching
a higher one's files depends on it as much as by importing it, and only the package's own data survives a wheel.
"""

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
NAMESPACE = "clip2video"
LAYERS = {"modeling_clip2video": 0, "processing": 0, "pipelines": 1, "training": 2, "apps": 3}
# Files that travel alone into a checkpoint folder, besides the remote-code folders.
ENDPOINT = "pipelines/publishing/endpoint"
COPIED_INTO_CHECKPOINTS = ("pipelines/pipeline_clip2video.py", f"{ENDPOINT}/handler.py", f"{ENDPOINT}/serve.py")
# What remote code may import at module level: transformers' own dependencies, which a machine that can load a
# transformers checkpoint always has. torchvision is required by transformers' video processors.
REMOTE_CODE_MODULE_LEVEL = {
    "modeling_clip2video": {"torch", "transformers", "huggingface_hub"},
    "processing": {"torch", "transformers", "huggingface_hub", "numpy", "torchvision"},
    "pipelines/pipeline_clip2video.py": {"torch", "transformers"},
    f"{ENDPOINT}/handler.py": {"torch", "transformers"},
    f"{ENDPOINT}/serve.py": set(),
}


def python_files(folder: str, root: Path = REPOSITORY) -> list[Path]:
    return sorted(path for path in (root / folder).rglob("*.py") if "__pycache__" not in path.parts)


def imports_of(path: Path, root: Path = REPOSITORY) -> list[tuple[str, bool]]:
    """(absolute module name, imported at module level outside `try`) for every import in `path`; relative imports
    are resolved against the file's folder as installed (`clip2video.<folder>.<module>`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = NAMESPACE + "." + path.parent.relative_to(root).as_posix().replace("/", ".")
    found = []

    def visit(node, module_level: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module
                found.append((name, module_level))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try, ast.ClassDef)):
                visit(child, module_level=False)
            else:
                visit(child, module_level)

    visit(tree, module_level=True)
    return found


# A string naming a project folder as a path ("apps", "../training/run.py") or as a module ("clip2video.apps.x").
_FOLDER_PATH = re.compile(r"(?:\.\./)*(" + "|".join(LAYERS) + r")(?:/.*)?")
_PATH_FUNCTIONS = {"Path", "PurePath", "PosixPath", "join", "joinpath", "open", "files", "spec_from_file_location"}
_FOLDER_MODULE = re.compile(rf"{NAMESPACE}\.(?:" + "|".join(LAYERS) + r")(?:\.[\w.]*)?")


def path_reaches(path: Path) -> list[str]:
    """The project folders (as module names) that a file reaches by file path or by a module name in a string: a
    folder's name as the right side of `/` or an argument of a call (`Path(...) / "apps"`, `os.path.join(root,
    "apps")`, `importlib.resources.files("clip2video.apps")`). Prose that names a file, in a message or an f-string,
    is no reach."""
    reached = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def string(node) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for node in ast.walk(tree):
        candidates, path_call = [], False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            candidates, path_call = [string(node.right)], True
        elif isinstance(node, ast.Call):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            candidates, path_call = [string(argument) for argument in node.args], function in _PATH_FUNCTIONS
        for text in candidates:
            if text is None:
                continue
            # A bare folder name is a path only where a path is built ("training" is also a split's name).
            if (match := _FOLDER_PATH.fullmatch(text)) and (path_call or "/" in text):
                reached.append(f"{NAMESPACE}.{match.group(1)}")
            elif _FOLDER_MODULE.fullmatch(text):
                reached.append(text)
    return reached


def project_folder(module: str) -> str | None:
    """The project folder a module name belongs to (`clip2video.processing.x` -> `processing`), or None."""
    parts = module.split(".")
    if parts[0] == NAMESPACE and len(parts) > 1:
        parts = parts[1:]
    return parts[0] if parts[0] in LAYERS else None


def folder_edges(root: Path = REPOSITORY) -> dict[str, set[str]]:
    edges = defaultdict(set)
    for folder in LAYERS:
        for path in python_files(folder, root):
            for module in [module for module, _ in imports_of(path, root)] + path_reaches(path):
                target = project_folder(module)
                if target and target != folder:
                    edges[folder].add(target)
    return edges


def violations(root: Path = REPOSITORY) -> list[str]:
    found = []
    stdlib = set(sys.stdlib_module_names)
    for folder, layer in LAYERS.items():
        for path in python_files(folder, root):
            relative = path.relative_to(root).as_posix()
            imports = imports_of(path, root)
            references = [(module, "imports") for module, _ in imports]
            references += [(module, "reaches by file path") for module in path_reaches(path)]
            for module, how in references:
                top = module.split(".")[0]
                target = project_folder(module)
                if top in LAYERS:
                    found.append(f"{relative}: imports {module!r} by its bare folder name; use {NAMESPACE}.{module}")
                if target and LAYERS[target] > layer:
                    found.append(f"{relative}: {how} {module!r}, a higher layer ({target} above {folder})")
                if target and layer == 0 and target != folder:
                    found.append(f"{relative}: remote code {how} another project folder ({module!r})")
            rule = REMOTE_CODE_MODULE_LEVEL.get(folder) or REMOTE_CODE_MODULE_LEVEL.get(relative)
            if rule is None:
                continue
            for module, module_level in imports:
                top = module.split(".")[0]
                if module_level and project_folder(module) is None and top not in stdlib and top not in rule:
                    found.append(
                        f"{relative}: remote code imports {module!r} at module level (allowed: the standard library, "
                        f"{', '.join(sorted(rule))}, and its own folder; import optional packages inside a function)"
                    )
                if relative in COPIED_INTO_CHECKPOINTS and top == NAMESPACE:
                    found.append(f"{relative}: is copied alone into checkpoints but imports {module!r}")
    return found


def main() -> int:
    edges = folder_edges()
    print("folder imports (layer: folder -> folders it imports)")
    for folder, layer in sorted(LAYERS.items(), key=lambda item: (item[1], item[0])):
        targets = ", ".join(sorted(edges.get(folder, ()))) or "-"
        print(f"  {layer}: {folder:<20} -> {targets}")
    found = violations()
    for violation in found:
        print("violation:", violation)
    print(f"{len(found)} violations")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
