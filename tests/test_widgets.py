import matplotlib.pyplot as plt
import pytest

from mllib.widgets import png, slider_gallery


def line(slope):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, slope])
    ax.set(title=f"slope {slope}", xlabel="x", ylabel="y")
    return fig


def test_moving_the_slider_swaps_in_the_precomputed_figure():
    gallery = slider_gallery(line, [1, 2, 3], description="slope", value=2)
    slider, image = gallery.children
    assert image.value == png(line(2))
    slider.value = 3
    assert image.value == png(line(3))


def test_every_figure_is_drawn_once_up_front():
    drawn = []
    slider, _ = slider_gallery(lambda k: drawn.append(k) or line(k), [1, 2], description="k").children
    slider.value = 2
    slider.value = 1
    assert drawn == [1, 2]


def test_png_closes_the_figure():
    fig = line(1)
    assert png(fig).startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("options, value, message", [([], None, "at least one"), ([1, 2], 5, "value=5")])
def test_slider_gallery_rejects_bad_arguments(options, value, message):
    with pytest.raises(ValueError, match=message):
        slider_gallery(line, options, description="k", value=value)
