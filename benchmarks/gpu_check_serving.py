"""GPU check part: serving (see gpu_check.py). To be written by its issue."""


def run() -> None:
    print("not written yet")
