"""One package per notebook, named like its method, notebook and ``params.yaml`` section (see
:mod:`mtlrepro.papers`): ``study.py`` (the typed config and the runs), ``claims.py``,
``figures.py``, ``consistency.py`` and ``units.py`` where the paper has them.  The methods
themselves live in :mod:`mtlrepro.methods`."""
