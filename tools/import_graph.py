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
(`pipelines/pipeline_clip2video.py`, `apps/endpoint/handler.py`) follow the remote-code rule too.
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
NAMESPACE = "clip2video"
LAYERS = {"modeling_clip2video": 0, "processing": 0, "pipelines": 1, "training": 2, "apps": 3}
# Files that travel alone into a checkpoint folder, besides the remote-code folders.
COPIED_INTO_CHECKPOINTS = ("pipelines/pipeline_clip2video.py", "apps/endpoint/handler.py", "apps/endpoint/serve.py")
# What remote code may import at module level: transformers' own dependencies, which a machine that can load a
# transformers checkpoint always has. torchvision is required by transformers' video processors.
REMOTE_CODE_MODULE_LEVEL = {
    "modeling_clip2video": {"torch", "transformers", "huggingface_hub"},
    "processing": {"torch", "transformers", "huggingface_hub", "numpy", "torchvision"},
    "pipelines/pipeline_clip2video.py": {"torch", "transformers"},
    "apps/endpoint/handler.py": {"torch", "transformers"},
    "apps/endpoint/serve.py": set(),
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
            for module, _ in imports_of(path, root):
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
            for module, module_level in imports:
                top = module.split(".")[0]
                target = project_folder(module)
                if top in LAYERS:
                    found.append(f"{relative}: imports {module!r} by its bare folder name; use {NAMESPACE}.{module}")
                if target and LAYERS[target] > layer:
                    found.append(f"{relative}: imports {module!r}, a higher layer ({target} above {folder})")
                if target and layer == 0 and target != folder:
                    found.append(f"{relative}: remote code imports another project folder ({module!r})")
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
