"""From a frame and its hint to the outputs: the frame contract, colour, despill, despeckle, chroma hint.

The operations the engine runs around the model, on tensors on the model's device (despeckle also on the
CPU through OpenCV); the chroma hint is a rough NumPy/OpenCV key for clips without one.
"""
