"""Training the language models: model shapes and presets, the Transformer, the Lightning
module and loop that trains proxies and final models, devices, experiment trackers, and the
Hugging Face export.

May import `regmix.search` (mixture and runs tables), `regmix.data` and the top-level helpers.
"""
