"""Data sets as users hold them: the embedded digits, CIFAR folders, ImageFolder trees."""
