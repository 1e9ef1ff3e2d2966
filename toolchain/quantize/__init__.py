"""Post-training quantization done by the toolchain: calibration statistics, range methods, symmetric
activations, cross-layer equalization and bias correction (see README, "Quantization").

The route: the converter writes the float graph it would quantize, with a calibration slot on every tensor
(calibrate-only conversion, ``converter.py``); the toolchain runs that graph once over the calibration split
(``stats.py``), edits weights (``equalize.py``, ``bias.py``) and writes each tensor's range (``ranges.py``); the
converter's own quantizer (MLIR) then turns the graph into the int8 artifact for each I/O type and batch form.
"""
