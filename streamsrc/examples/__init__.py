"""Example domains used by the demo, the notebooks and the tests. Pure: no store, no I/O."""
