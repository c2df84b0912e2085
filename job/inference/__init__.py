"""Using a trained checkpoint: the Ray-free Translator API (translator), stdin to stdout in one
process (stream), Ray Data bulk jobs over whole corpora (bulk), what they do to each block of
rows (tasks), and their resumable output parts (outputs).

May import: job.checkpoint, job.model, job.corpus and the shared top-level modules; never
job.training (the two stages stand side by side).
"""
