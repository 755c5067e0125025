"""restore: old-photo restoration (film negatives, black-and-white prints, damaged scans) on fastai."""

__version__ = "0.1.0"
