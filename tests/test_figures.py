"""Figure axes that show the data: one spike does not flatten the lines, decades get a log axis, a report's
points always show, and a clipped axis says so."""

from harness.report.figures import fit_y_axis, pyplot


def _axis():
    return pyplot().subplots()[1]


def test_a_spike_is_clipped_and_named_while_the_bulk_fills_the_axis():
    ax = _axis()
    values = [1.0 + 0.01 * (i % 7) for i in range(500)] + [225.0]
    assert fit_y_axis(ax, values) == "spikes clipped"
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear" and low < 1.0 and 1.06 < high < 2.0


def test_values_spanning_decades_get_a_log_axis_and_reported_points_stay_visible():
    ax = _axis()
    assert fit_y_axis(ax, [10.0 ** (-k / 10) for k in range(50)]) == ""
    assert ax.get_yscale() == "log"
    ax = _axis()
    fit_y_axis(ax, [0.6 + 0.001 * i for i in range(1000)], keep=[0.098, 1.13])
    low, high = ax.get_ylim()
    assert low < 0.098 and high > 1.13


def test_signed_values_stay_linear_and_empty_panels_are_left_alone():
    ax = _axis()
    fit_y_axis(ax, [-1.0, 0.5, 2.0, float("nan"), None])
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] < -1.0
    assert fit_y_axis(_axis(), []) == ""
