"""The charts show what was measured: the fine-tuning curves end at the final
evaluation, the roofline says which weights (hot or cold) its points timed."""

import pytest

pytest.importorskip("matplotlib")
from qkernels.bench import plots  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    saved = []

    def keep(fig, path):
        saved.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_training_curves_end_at_the_final_evaluation(figures, tmp_path):
    report = {
        "losses": [(1, 2.0), (2, 1.5), (3, 1.0)],
        "history": [{"step": 2, "metric": 0.6}],
        "before": {"metric": 0.5},
        "after": {"metric": 0.8},
        "metric_name": "accuracy",
        "config": {"model": "m", "task": "classification", "method": "qat"},
    }
    plots.training_curves(report, tmp_path / "c.png")
    metric_ax = figures[0].axes[1]
    (line,) = metric_ax.get_lines()
    assert list(line.get_xdata()) == [0, 2, 3]
    assert list(line.get_ydata()) == [0.5, 0.6, 0.8]


@pytest.mark.parametrize("weights", ["hot", "cold"])
def test_roofline_title_names_the_weights_it_timed(figures, tmp_path, weights):
    row = {"m": 16, "k": 64, "n": 64, "impl": "qkernels w8a8", "x_dtype": "float32",
           "gflops": 10.0, "weights": weights}  # fmt: skip
    ceilings = {"dram_gbs": 10.0, "fp32_gflops": 100.0, "int8_gops": 400.0}
    plots.roofline_chart([row], ceilings, tmp_path / "r.png", "Linear layers")
    ax = figures[0].axes[0]
    assert f"{weights} weights" in ax.get_title() and f"{weights} weights" in ax.get_xlabel()
