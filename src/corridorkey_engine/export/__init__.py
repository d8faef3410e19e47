"""``corridorkey export``: the keyer as a self-contained graph (ONNX, TorchScript, torch.export) for host
applications, and the proof that each file keys like the engine (layer 5: tooling above the engine).

``graph`` (the module exported), ``resample`` (the engine's resizes as in-graph tensor operations),
``targets`` (the writers and their metadata), ``verify`` (each file run by its own runtime vs the engine).
"""
