"""scikit-learn's digits: 1797 8 x 8 images bundled with scikit-learn, split the same way on
every load. scikit-learn is imported only here, when digits is loaded."""

import numpy as np

from quantlab.datasets.names import CLASS_NAMES
from quantlab.errors import QuantlabError


def load():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise QuantlabError(f"digits needs scikit-learn ({error}); "
                            "install it with `pip install scikit-learn`") from error
    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # 8x8 pixels of 0..16
    labels = digits.target.astype(np.int64)
    # Stratified with a fixed seed: the same split on every load, every class in both halves.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": CLASS_NAMES["digits"], "source": "scikit-learn", "scale": 16.0}
