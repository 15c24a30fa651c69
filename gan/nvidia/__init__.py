"""Safe import of NVIDIA's StyleGAN2-ADA (PyTorch) and StyleGAN2 (TensorFlow) network pickles.

:mod:`gan.nvidia.unpickler` reads a pickle without running anything from it,
:mod:`gan.nvidia.convert` turns its networks into atelier's, :mod:`gan.nvidia.remote` fetches
an https model into the cache.
"""
