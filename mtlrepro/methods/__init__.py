"""One module per paper's method (paper A: :mod:`mtlrepro.methods.distinctiveness`)."""
