"""Command groups of the ``flowtools`` CLI that live in their own modules (imported by ``flowtools.cli``).

Each module defines one typer app and imports its heavy machinery inside the command functions, so
``flowtools --help`` stays light.
"""
