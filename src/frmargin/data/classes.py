"""The CIFAR-10 class names in label order: the one definition the data loaders, the run folder
and the paper's table share (this module imports nothing).

Example:
    >>> CIFAR10_CLASSES[3]
    'cat'
"""

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
