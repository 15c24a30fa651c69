"""What every stage shares: errors and exit codes, logging, atomic file IO, hashing, safe image
decoding, tensors-only loading, the dataset format contract. Nothing here imports a stage."""
