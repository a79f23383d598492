"""Labelled datasets: manifests, image and mask reading, joint preprocessing, collate."""

from auditcam.data.dataset import LabelledDataset, collate
from auditcam.data.io import SampleFault, read_image, read_mask
from auditcam.data.manifest import read_classes, read_manifest

__all__ = ["LabelledDataset", "SampleFault", "collate", "read_classes", "read_image", "read_manifest", "read_mask"]
