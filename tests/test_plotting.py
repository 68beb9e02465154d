"""modelcs.plotting writes PNGs without touching the user's matplotlib backend or pyplot."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("matplotlib")

_SCRIPT = textwrap.dedent("""
    import sys
    import matplotlib
    import numpy as np
    from modelcs import plotting

    out = sys.argv[1]
    before = matplotlib.get_backend()
    rng = np.random.default_rng(0)
    paths = [
        plotting.plot_figure2(1 + 0.1 * rng.standard_normal(50), 1 + 0.1 * rng.standard_normal(50),
                              {"one step": rng.random(50)}, out + "/f2.png", notes=["x"]),
        plotting.plot_error_over_iterations({"iht": rng.random((5, 7))}, out + "/err.png"),
        plotting.plot_delta_search({"random": [(1, 0.1), (5, 0.3)]}, out + "/delta.png"),
    ]
    import matplotlib.pyplot as plt
    print(before, matplotlib.get_backend(), len(plt.get_fignums()), *paths)
""")


def test_plotting_keeps_the_users_backend(tmp_path):
    env = dict(os.environ, MPLBACKEND="svg")  # a non-Agg backend the user chose
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120, check=True)
    before, after, n_open, *paths = r.stdout.split()
    assert before.lower() == "svg" and after.lower() == "svg"
    assert n_open == "0"  # no figure left registered with pyplot
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
