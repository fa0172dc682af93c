"""The Inference Endpoints files every published folder carries: `handler.py` (the toolkit's `EndpointHandler`),
`serve.py` (the server of a custom container) and `requirements.txt`. They are copied into checkpoints, where they run
without this package (standard library, torch and transformers only); the library never imports them."""
