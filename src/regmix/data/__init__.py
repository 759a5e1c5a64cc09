"""The data stage: read a corpus as it lies on disk, tokenize it into token shards, count
tokens per domain and split, and feed training windows back from the shards. Also the
synthetic demo corpus with its planted answer.

May import only the top-level helpers (`regmix.errors`, `regmix.files`, `regmix.parallel`).
"""
