"""The layering rule (see tools/import_graph.py): remote code imports only torch, transformers, the standard
library and its own folder; no folder imports a higher layer; training never imports apps."""

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import import_graph  # noqa: E402


def test_the_repository_follows_the_layering_rule():
    assert import_graph.violations() == []
    assert "apps" not in import_graph.folder_edges().get("training", set())


def write(root: Path, relative: str, code: str):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code), encoding="utf-8")


def test_each_kind_of_violation_is_found(tmp_path):
    write(tmp_path, "modeling_clip2video/modeling.py", """
        import torch
        import av  # module level, not a transformers dependency
        from clip2video.processing import CLIP2VideoProcessor  # the other remote-code folder
        from .configuration import Config  # own folder: fine
        try:
            import decord  # optional: fine
        except ImportError:
            decord = None
    """)
    write(tmp_path, "processing/video.py", """
        import numpy as np
        def decode():
            import av  # inside a function: fine
    """)
    write(tmp_path, "training/run.py", "from clip2video.apps.publishing import publish\n")
    write(tmp_path, "pipelines/pipeline_clip2video.py", "from clip2video.pipelines import helpers\n")
    write(tmp_path, "apps/search/index.py", "import processing\nfrom clip2video.training import run\n")
    found = "\n".join(import_graph.violations(tmp_path))
    assert "modeling_clip2video/modeling.py: remote code imports 'av' at module level" in found
    assert "modeling_clip2video/modeling.py: remote code imports another project folder ('clip2video.processing')" in found
    assert "'decord'" not in found and "Config" not in found and "processing/video.py" not in found
    assert "training/run.py: imports 'clip2video.apps.publishing', a higher layer (apps above training)" in found
    assert "pipelines/pipeline_clip2video.py: is copied alone into checkpoints but imports 'clip2video.pipelines'" in found
    assert "apps/search/index.py: imports 'processing' by its bare folder name" in found
    assert "apps/search/index.py: imports 'clip2video.training'" not in found  # apps may use training
    assert len(found.splitlines()) == 5


def test_a_file_path_into_a_higher_layer_is_found_like_an_import(tmp_path):
    write(tmp_path, "pipelines/publishing.py", """
        import os
        from importlib.resources import files
        from pathlib import Path
        HANDLER = Path(__file__).resolve().parents[1] / "apps" / "endpoint" / "handler.py"
        RUN = os.path.join(os.path.dirname(__file__), "../training/run.py")
        TEMPLATE = files("clip2video.apps.endpoint") / "requirements.txt"
        OWN = Path(__file__).parent / "pipeline_clip2video.py"  # its own folder: fine
        SPLITS = {"training": 1}["training"]  # a split's name, not a path
        MESSAGE = Path("out").joinpath("results.json").write_text("made by training/run.py")  # prose: fine
    """)
    write(tmp_path, "processing/video.py", "from pathlib import Path\nCODE = Path('..') / 'modeling_clip2video'\n")
    write(tmp_path, "apps/search/index.py", "from pathlib import Path\nRECIPES = Path(__file__).parents[2] / 'training'\n")
    found = import_graph.violations(tmp_path)
    assert sorted(found) == sorted([
        "processing/video.py: remote code reaches by file path another project folder ('clip2video.modeling_clip2video')",
        "pipelines/publishing.py: reaches by file path 'clip2video.apps', a higher layer (apps above pipelines)",
        "pipelines/publishing.py: reaches by file path 'clip2video.training', a higher layer (training above pipelines)",
        "pipelines/publishing.py: reaches by file path 'clip2video.apps.endpoint', a higher layer (apps above pipelines)",
    ])
    assert import_graph.folder_edges(tmp_path)["apps"] == {"training"}  # a reach is an edge of the graph


def test_the_architecture_page_shows_the_current_graph():
    import subprocess

    printed = subprocess.run(
        [sys.executable, str(Path(import_graph.__file__))], capture_output=True, text=True, check=True
    ).stdout
    graph = "\n".join(line for line in printed.splitlines() if not line.endswith("violations"))
    page = (import_graph.REPOSITORY / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert graph in page, "docs/architecture.md shows an old import graph: paste `python tools/import_graph.py`"


def test_tests_import_helpers_and_never_each_other():
    # Shared test code lives in tests/helpers (and fixtures in tests/conftest.py): a test module imported by another
    # runs its tests twice and couples the two; a bare `import tiny_models` works only from one working directory.
    import ast

    tests = Path(__file__).resolve().parent
    modules = {path.stem for path in tests.rglob("*.py")}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] in modules or (parts[0] == "tests" and any(part.startswith("test_") for part in parts)):
                    found.append(f"{path.relative_to(tests)}: import {name}")
    assert not found, "\n".join(found)
