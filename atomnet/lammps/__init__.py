"""atomnet in LAMMPS: TorchScript export and the ``pair_style atomnet`` plugin."""
