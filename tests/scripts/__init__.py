"""Scripts the tests start with a launcher (`accelerate launch`, `torchrun`) from the repository root, as modules:
`-m tests.scripts.<name>`."""
