"""One module per paper's experiments: the runs, tables, figures' data and claims a notebook
calls (the methods themselves live in :mod:`mtlrepro.methods`)."""
