"""retail-reid: retail product re-identification for checkout loss prevention.

The distribution installs one import package, ``retail_reid``:

- ``retail_reid.models``: the embedder: training (``[train]`` extra), evaluation, ONNX export, the torch-free runtime
- ``retail_reid.gallery``: the versioned reference store per SKU, searched with FAISS, and the operators' tools
- ``retail_reid.pipeline``: sources, detector, tracker, recognition, events, replay, the edge service
- ``retail_reid.errors``, ``images``, ``userfiles``, ``durable``: what every package uses (the user-error base,
  image and user-file reading, crash-safe writes); ``compat``: ``tomllib`` and ``StrEnum`` on Python 3.10
- ``retail_reid.cli``: the ``reid`` command line, which gathers each package's own ``cli`` module

In the repository the three packages are the top-level folders ``models/``, ``gallery/`` and ``pipeline/``;
pyproject.toml maps them into this namespace.
"""

__version__ = "0.2.0"
