"""Labelled datasets: manifests (CSV/Parquet), COCO and folder layouts, masks and boxes, joint
preprocessing, a collate that carries failed samples, and ``validate`` to check a dataset first."""

from auditcam.data.custom import WrappedDataset, as_audit_dataset
from auditcam.data.dataset import LabelledDataset, collate, default_workers, load_sample, loader
from auditcam.data.formats import FORMATS, DataOptions, detect_format, read_source
from auditcam.data.io import SampleFault, read_image, read_mask
from auditcam.data.manifest import read_manifest
from auditcam.data.problems import Problem
from auditcam.data.rows import UNKNOWN_GROUP, Row, read_classes
from auditcam.data.subjects import Box, MaskFile, MaskOptions, NoSubject
from auditcam.data.validate import Validation, format_table, validate

open_dataset = LabelledDataset.open

__all__ = [
    "FORMATS",
    "UNKNOWN_GROUP",
    "Box",
    "DataOptions",
    "LabelledDataset",
    "MaskFile",
    "MaskOptions",
    "NoSubject",
    "Problem",
    "Row",
    "SampleFault",
    "Validation",
    "WrappedDataset",
    "as_audit_dataset",
    "collate",
    "default_workers",
    "detect_format",
    "format_table",
    "load_sample",
    "loader",
    "open_dataset",
    "read_classes",
    "read_image",
    "read_manifest",
    "read_mask",
    "read_source",
    "validate",
]
