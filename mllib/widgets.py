"""Widgets that answer at once: sweeps are computed and drawn before the slider moves."""
import io
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt


def png(fig: plt.Figure) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def slider_gallery(
    draw: Callable[[object], plt.Figure], options: Sequence, *, description: str, value=None
) -> widgets.VBox:
    """A slider over ``options`` that swaps precomputed figures in place.

    ``draw(option)`` is called once per option, up front; moving the slider only replaces
    the image's bytes, so the figure follows the slider without any computation.

    Raises:
        ValueError: for no options, or a ``value`` that is not one of them.
    """
    options = list(options)
    if not options:
        raise ValueError("options must hold at least one value to slide over")
    if value is not None and value not in options:
        raise ValueError(f"value={value!r} is not one of options={options}")
    pictures = {option: png(draw(option)) for option in options}
    slider = widgets.SelectionSlider(options=options, value=options[0] if value is None else value,
                                     description=description, continuous_update=True)  # fmt: skip
    image = widgets.Image(value=pictures[slider.value], format="png")
    slider.observe(lambda change: setattr(image, "value", pictures[change["new"]]), names="value")
    return widgets.VBox([slider, image])
