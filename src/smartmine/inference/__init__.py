"""Using a trained run: load it, embed images, search a gallery, calibrate a match threshold, export the model.

>>> model = smartmine.load("runs/try")                       # doctest: +SKIP
>>> emb = model.embed("photos/")                             # (N, D) unit vectors  # doctest: +SKIP
>>> gallery = smartmine.GalleryIndex.build(model, "photos/")  # doctest: +SKIP
>>> gallery.search("query.jpg", k=5)                         # doctest: +SKIP
"""

from smartmine.inference.calibrate import Calibration, calibrate, load_calibration, pick_threshold, save_calibration
from smartmine.inference.errors import InferenceError
from smartmine.inference.gallery import GalleryIndex, Hit
from smartmine.inference.model import TrainedModel, load
from smartmine.inference.sources import ImageList, list_images

__all__ = [
    "Calibration",
    "GalleryIndex",
    "Hit",
    "ImageList",
    "InferenceError",
    "TrainedModel",
    "calibrate",
    "list_images",
    "load",
    "load_calibration",
    "pick_threshold",
    "save_calibration",
]
