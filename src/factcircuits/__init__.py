"""factcircuits: where and how transformer language models store and retrieve facts."""

__version__ = "0.1.0"
