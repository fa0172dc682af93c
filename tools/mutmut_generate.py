"""Writes mutmut's mutants (the `mutants/` folder and its `.meta` files) without mutmut's baseline run of the tests.

    cd <export> && python -m tools.mutmut_generate      # then run them with tools/mutmut_inprocess.py

`mutmut run` first runs the whole selection once to record which tests reach which function (minutes on a loaded
2-core machine, and a flaky test there stops it); an in-process run chooses its tests itself, so only the
generation steps are needed. These are mutmut's own functions (3.8), called in the order `mutmut run` calls them.
"""

import os

import mutmut.__main__ as mutmut_main


def main() -> None:
    mutmut_main.set_mutant_under_test("mutant_generation")
    os.makedirs("mutants", exist_ok=True)
    mutmut_main.copy_src_dir()
    mutmut_main.copy_also_copy_files()
    mutmut_main.setup_source_paths()
    mutmut_main.store_lines_covered_by_tests()
    print(mutmut_main.create_mutants(1))


if __name__ == "__main__":
    main()
