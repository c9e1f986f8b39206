"""The respaths version, in a module of its own so that the modules recording it (checkpoints, run
records) need not import the package."""
__version__ = "0.2.0"
