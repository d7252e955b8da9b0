"""Integrations with third-party libraries, one module per library.

Each module imports its library; ``import outlast`` never imports them. Install the matching
extra (e.g. ``pip install outlast[httpx]``) before importing a module here.
"""
