"""mtlrepro: the shared package behind the replications of five efficient multi-task papers.

Notebooks in ``notebooks/`` call it; see the README for the map of modules, and
``mtlrepro.data.get_dataset``, ``mtlrepro.models.create_model``, ``mtlrepro.train.fit`` for the
entry points.
"""

__version__ = "0.1.0"
