"""LSTM seq2seq machine translation as a Ray job: Ray Data ingest, DDP under Ray Train, bulk
translation."""

__all__ = ["Translation", "Translator"]


def __getattr__(name):  # keep `import job` light: torch/ray load only when the API is used
    if name in __all__:
        from job.inference import translator

        return getattr(translator, name)
    raise AttributeError(name)
