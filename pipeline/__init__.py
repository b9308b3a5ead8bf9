"""Training and evaluation of NB201 cells: model, data, engine, CLI (`python -m pipeline`).

Importing the package is cheap: torch and friends load only with the submodule that needs them.
The engine never imports Ray, so it runs on any machine with torch alone.
"""
