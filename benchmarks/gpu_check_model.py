"""GPU check part: model (see gpu_check.py). To be written by its issue."""


def run() -> None:
    print("not written yet")
