"""Reading the corpus: finding its files and their format (files), the tolerant parsers
(parsers), the Ray Data datasource that runs them (datasource), files cut into pieces that tasks
read on their own (pieces), what happens to one block of rows (normalise, blocks), the two
passes that prepare the corpus once (prepare, manifest), and the vocabulary (vocab).

May import: the shared top-level modules (config, errors, storage, runtime, ...). Nothing above.
"""
