"""Ground floor: data sets, models, training, checkpoints, requests, batched inference."""
