"""meshp2p installs as a package, not only as a checkout: the wheel carries the llama.cpp pin, recipe and patches,
and an installed (not editable) meshp2p finds them, so `meshp2p up` can build llama.cpp on first run; it carries
the model catalog too, so `meshp2p up --model NAME` knows its names, and the web console's page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "vendor" / "llama.cpp"


def _source_copy(where: Path) -> None:
    """What an sdist holds, copied (a build writes build/ and *.egg-info beside its sources: not into the repo)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, where / name)
    for name in ("meshp2p", "vendor"):
        shutil.copytree(REPO / name, where / name, symlinks=True, ignore=ignore)


def test_the_wheel_carries_the_recipe_and_an_installed_meshp2p_finds_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _source_copy(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("meshp2p-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("meshp2p/_llama_cpp/"): z.read(n) for n in z.namelist()
                   if n.startswith("meshp2p/_llama_cpp/")}
        assert "meshp2p/cli/main.py" in z.namelist()
        assert z.read("meshp2p/inference/catalog.json") == (REPO / "meshp2p/inference/catalog.json").read_bytes()
        page = {p.name: p.read_bytes() for p in (REPO / "meshp2p/api/web").iterdir() if p.is_file()}
        assert {n.removeprefix("meshp2p/api/web/"): z.read(n) for n in z.namelist()
                if n.startswith("meshp2p/api/web/")} == page, "the wheel ships the console's page as it is here"
    expected = {str(p.relative_to(RECIPE)): p.read_bytes() for p in RECIPE.rglob("*") if p.is_file()}
    assert shipped == expected, "the wheel ships vendor/llama.cpp/ as it is in the checkout"

    # Installed as files (not the editable link): the recipe is found inside the package.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    probe = ("import meshp2p, pathlib; from meshp2p.inference.build import recipe_dir; "
             "from meshp2p.inference.catalog import load_catalog; from meshp2p.api.console_page import page_files; "
             "print(pathlib.Path(meshp2p.__file__).parent); print(recipe_dir()); print(len(load_catalog().entries)); "
             "print(len(page_files()))")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path).stdout.split()
    package, recipe, entries, page_count = Path(out[0]), Path(out[1]), int(out[2]), int(out[3])
    assert page_count == len(page), "the installed console serves its page from the package"
    assert package == target / "meshp2p", "the installed copy was imported, not the checkout"
    assert recipe == target / "meshp2p" / "_llama_cpp" and (recipe / "build.sh").is_file()
    assert (recipe / "VERSION").read_text() == (RECIPE / "VERSION").read_text()
    assert entries == len(json.loads((REPO / "meshp2p/inference/catalog.json").read_text())["models"])
