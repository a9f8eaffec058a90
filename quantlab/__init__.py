"""quantlab: what does 8-bit quantization do to this neural network on this CPU?

Importing this package is cheap on purpose: the pytest plugin is loaded in every pytest
run where quantlab is installed, so TensorFlow is imported only inside the functions
that need it (see ``quantlab._tf``).
"""

__version__ = "0.1.0"
