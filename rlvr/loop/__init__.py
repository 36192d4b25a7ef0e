"""The driver: the Trainer and its step, the pipeline of batches in flight, the engine pool, weight-sync
set-up, evaluation, checkpoints and step metrics."""
