"""Mariposa: one daemon that keeps what runs on this host equal to what the project manifests say."""

__version__ = "0.1.0"
