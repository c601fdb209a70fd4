"""Development-only tooling: the local cluster (`tiered dev`) and `make demo`. Never installed in an image."""
