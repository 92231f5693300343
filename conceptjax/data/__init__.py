"""Data: ``shapesworld`` (the procedural world with ground truth), ``images`` (tfds data_source / folder
pipelines with grain), ``store`` (chunked, resumable embedding and sparse-code store).

Import the submodule you need; nothing is imported here.
"""
