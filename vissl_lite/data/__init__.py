"""Datasets as uint8 (C, S, S) images with labels, and loaders that batch them on the device."""

from vissl_lite.data.datasets import (
    FORMATS,
    ImageSet,
    channel_note,
    data_name,
    label_subset,
    load_split,
    parse_spec,
    skipped_files,
    stratified_split,
)
from vissl_lite.data.loaders import DeviceLoader, StreamLoader, make_loader
from vissl_lite.data.readers import DataError

__all__ = ["FORMATS", "DataError", "DeviceLoader", "ImageSet", "StreamLoader", "channel_note", "data_name",
           "label_subset", "load_split", "make_loader", "parse_spec", "skipped_files",
           "stratified_split"]
