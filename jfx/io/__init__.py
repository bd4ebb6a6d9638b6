"""The shell's file boundary: the only package that touches h5py, files and formats."""
