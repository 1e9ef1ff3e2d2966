"""The build's stages: functions over a ``Build`` context (``stages.context``) that return outputs and log progress.

Each declares a ``cache.Stage`` (name, version, tools) and the inputs its key hashes; ``pipeline.py`` calls them in
order. They never print: progress goes through ``logging``.
"""
