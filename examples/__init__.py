"""Examples of embedding streamsrc in applications (not part of the installed package)."""
