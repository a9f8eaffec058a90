"""The built-in datasets: their names, class names and the folder names they live under."""

NAMES = ("fashion_mnist", "mnist", "cifar10", "digits")
from quantlab.defaults import DATASET as DEFAULT  # noqa: E402 (one default, for every surface)

CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
    "digits": tuple(str(d) for d in range(10)),
}

# Folder names a dataset may live under: the Debian/Keras spelling first.
SPELLINGS = {
    "fashion_mnist": ("fashion-mnist", "fashion_mnist"),
    "mnist": ("mnist",),
    "cifar10": ("cifar10", "cifar-10"),
}
