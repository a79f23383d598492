"""The run: plan the batches, explain -> score -> record them into Parquet shards (resumable,
under torchrun, on any device), merge the shards and pick the gallery."""
