"""Training under Ray Train: the TorchTrainer on the driver (trainer), the per-worker loop
(worker), one optimizer step (step), the position in the epoch (position), what each rank reads
(feeder), validation (validation) and DDP plumbing (distributed).

May import: job.checkpoint, job.model, job.corpus and the shared top-level modules; never
job.inference (the two stages stand side by side).
"""
