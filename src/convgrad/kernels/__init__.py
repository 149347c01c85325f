"""Kernels: pure NumPy forward/backward pairs, no Tensor: the mathematics of every op, one module
each. (``convgrad.nn.functional`` is the Tensor-level API built on them.)
"""
