"""Pure NumPy forward/backward pairs, no Tensor: the mathematics of every op, one module each."""
