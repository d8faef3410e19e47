"""The demo: synthetic green-screen plates with ground truth, the demo clip, training and evaluation of
the small bundled model (``assets/``). Tooling around the engine: nothing in the runtime imports it.

``python -m corridorkey_engine.demo.train`` trains a model, ``python -m corridorkey_engine.demo.evaluate``
measures one; ``corridorkey demo`` keys the demo clip with the bundled model.
"""
