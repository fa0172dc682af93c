"""Applications on top of the model: publishing helpers, the Inference Endpoints handler, video search, the demo."""
