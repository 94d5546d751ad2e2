"""Compression methods: one file each behind the interface in base.py, listed in registry.py."""
