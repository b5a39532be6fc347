"""repoctx: whole repositories, dependency-ordered, in the context of a local long-context model."""

__version__ = "0.1.0"
