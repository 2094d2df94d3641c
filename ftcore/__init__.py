"""ftflow's library: config, hub, data, training, evaluation, export and registry.

Plain Python + torch / Hugging Face. It never imports prefect, so every step can be called,
tested and debugged as an ordinary function.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ftflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
