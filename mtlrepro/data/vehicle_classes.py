"""Vehicle-X's class vocabulary (paper A), shared by the real loader (``vehiclex``) and the
embedded generator (``vehicles``)."""

from __future__ import annotations

# Vehicle-X's colour and type lists (list_color.txt / list_type.txt of the AI City Challenge
# packaging; the order is inferred from public code using them, and agrees with paper A, where
# pink is a colour and "sportscar" the tenth type).
# fmt: off
VEHICLE_COLOURS: tuple[str, ...] = (
    "yellow", "orange", "green", "gray", "red", "blue",
    "white", "golden", "brown", "black", "purple", "pink",
)
VEHICLE_TYPES: tuple[str, ...] = (
    "sedan", "suv", "van", "hatchback", "mpv", "pickup",
    "bus", "truck", "estate", "sportscar", "rv",
)
# fmt: on
VEHICLES_TASKS: tuple[str, ...] = ("colour", "type", "identity", "camera")
