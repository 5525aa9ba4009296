"""Source anatomies of the demo cohort: the MNI152 2009 template, Colin27 and INIA19.

Each anatomy is a 1 mm, skull-stripped, MNI-aligned brain with four channels the demo mixes
into a contrast: ``t1`` (the source T1 intensity, 0..1, white matter near 0.8-0.9) and
``gm``/``wm``/``csf`` tissue probabilities.

- ``mni152``: the MNI152 2009 template and its GM/WM/brain maps shipped inside nilearn;
  ``csf`` = brain mask - gm - wm (clipped to 0..1).
- ``colin27``: one real brain (Colin Holmes, 27 averaged scans), shipped by Debian's
  ``mricron-data`` (``ch2bet.nii.gz``, skull-stripped). Its tissue maps are our own:
  ANTs Atropos k-means (3 classes) inside the brain mask, segmented at
  :data:`COLIN27_SEGMENT_MM` and the posteriors resampled back to 1 mm, which keeps it
  to ~10 s on 2 cores (about 30 s at 1 mm). It is a held-out anatomy: no demo training
  subject derives from it.
- ``inia19``: a real brain no human scan resembles closely: the INIA19 rhesus macaque
  template (Rohlfing et al. 2012; ``inia19-t1-brain.nii.gz`` in the same Debian package, 0.5
  mm), scaled by :data:`INIA19_SCALE` to a human brain's size (0.11 L to 1.7 L, Colin27's
  1.74 L) and resampled to 1 mm; tissue maps from the same Atropos segmentation as Colin27
  (four classes, the middle two grey matter).
  The demo's second validation anatomy: choices made on the MNI-derived validation subject
  alone cannot see what a model learnt of the template's own anatomy (every training
  subject is the same template, deformed), so they are checked on a brain of another shape.

Every external file this module reads is named here, once.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

ANATOMIES = ("mni152", "colin27", "inia19")
# Debian's mricron-data: Colin27 at 1 mm (181 x 217 x 181), MNI-aligned, RAS.
COLIN27_DIR = Path("/usr/share/mricron/templates")
COLIN27_BRAIN = COLIN27_DIR / "ch2bet.nii.gz"  # skull-stripped; brain = voxels > 0
COLIN27_HEAD = COLIN27_DIR / "ch2.nii.gz"  # the same head with its skull
COLIN27_PACKAGE = "mricron-data"
COLIN27_SUBJECT = "sub-colin27"  # the demo's held-out real-anatomy subject
COLIN27_MISSING = (
    "demo: Colin27 (Debian package mricron-data) not installed: the demo runs without its "
    "real-anatomy test subject"
)
# The same package: the INIA19 macaque template brain at 0.5 mm (168 x 206 x 128), RAS, 0
# outside the brain; scaled INIA19_SCALE times about its origin (the anterior commissure).
INIA19_BRAIN = COLIN27_DIR / "inia19-t1-brain.nii.gz"
INIA19_SUBJECT = "sub-inia19"  # the demo's second validation anatomy
INIA19_SCALE = 2.5  # (1.74 L / 0.109 L) ** (1/3) = 2.52: Colin27's brain volume
INIA19_CLASSES = 4  # Atropos k-means classes: csf, two grey (merged), white
INIA19_MISSING = (
    "demo: INIA19 (Debian package mricron-data) not installed: the demo runs without its "
    "second validation anatomy"
)
# Debian's insighttoolkit5-examples: a real routine head T1, 2 x 2 x 3 mm (128 x 128 x 62),
# uint8; a thick-slice scan with no high-resolution truth.
ROUTINE_T1_PACKAGE = "insighttoolkit5-examples"
ROUTINE_T1_SCAN = Path(
    "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"
)

TEMPLATE_MARGIN_MM = 16.0  # crop around the brain: room for the demo's deformation + scale
COLIN27_SEGMENT_MM = 1.5  # Atropos grid: 3.4x fewer voxels than 1 mm
COLIN27_ATROPOS_ITERATIONS = 3
COLIN27_MRF = "[0.1,1x1x1]"  # mild spatial smoothness (ants.kmeans_segmentation's default)

DESCRIPTIONS = {
    "mni152": "MNI152 2009 template (nilearn): t1 = template intensity, gm/wm = its "
    "probability maps, csf = brain mask - gm - wm",
    "colin27": "Colin27 (Debian mricron-data ch2bet): t1 = intensity / max, gm/wm/csf = ANTs "
    f"Atropos k-means[3] posteriors ({COLIN27_SEGMENT_MM} mm, "
    f"{COLIN27_ATROPOS_ITERATIONS} iterations) resampled to 1 mm",
    "inia19": "INIA19 rhesus macaque template (Debian mricron-data inia19-t1-brain), scaled "
    f"{INIA19_SCALE}x to a human brain's size and resampled to 1 mm (cubic): t1 = intensity / "
    "its 99.9th percentile in the brain (clipped to 1), gm/wm/csf = ANTs Atropos "
    f"k-means[{INIA19_CLASSES}] as Colin27's, its two middle classes merged into gm",
}


class Anatomy(NamedTuple):
    """A source brain, cropped to its brain bounding box plus :data:`TEMPLATE_MARGIN_MM`."""

    channels: np.ndarray  # (4, X, Y, Z) float32: t1, gm, wm, csf
    mask: np.ndarray  # (X, Y, Z) float32, 1 in the brain
    affine: np.ndarray  # (4, 4) voxel -> template mm (MNI-aligned, diagonal, 1 mm)
    bbox_mm: np.ndarray  # (2, 3) brain bounding box, template mm (min, max)


def colin27_available() -> bool:
    """Whether Debian's ``mricron-data`` Colin27 brain is installed."""
    return COLIN27_BRAIN.is_file()


def inia19_available() -> bool:
    """Whether Debian's ``mricron-data`` INIA19 brain is installed."""
    return INIA19_BRAIN.is_file()


@functools.lru_cache(maxsize=len(ANATOMIES))
def load_anatomy(name: str) -> Anatomy:
    """The source anatomy ``name`` (one of :data:`ANATOMIES`), cached per process.

    Raises FileNotFoundError (naming the Debian package) when Colin27 or INIA19 is not
    installed.
    """
    if name == "mni152":
        t1, gm, wm, csf, mask, affine = _mni152()
    elif name == "colin27":
        t1, gm, wm, csf, mask, affine = _colin27()
    elif name == "inia19":
        t1, gm, wm, csf, mask, affine = _inia19()
    else:
        raise ValueError(f"unknown anatomy {name!r}; known: {list(ANATOMIES)}")
    return _crop(np.stack([t1, gm, wm, csf]).astype(np.float32), mask.astype(np.float32), affine)


def _crop(channels: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> Anatomy:
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise ValueError(f"anatomy affine must be 1 mm RAS axis-aligned, got\n{affine}")
    idx = np.argwhere(mask > 0)
    bbox_vox = np.stack([idx.min(0), idx.max(0)]).astype(np.float64)
    bbox_mm = bbox_vox + affine[:3, 3]
    m = int(TEMPLATE_MARGIN_MM)
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cropped = affine.copy()
    cropped[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return Anatomy(
        np.ascontiguousarray(channels[(slice(None), *crop)]), mask[crop], cropped, bbox_mm
    )


def _mni152():
    from nilearn import datasets

    def arr(img):
        return np.asarray(img.dataobj, dtype=np.float32)

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = arr(t1_img)  # uint8 scaled to 0..1 by nilearn
    gm = arr(datasets.load_mni152_gm_template(resolution=1))
    wm = arr(datasets.load_mni152_wm_template(resolution=1))
    mask = (arr(datasets.load_mni152_brain_mask(resolution=1)) > 0).astype(np.float32)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    return t1, gm, wm, csf, mask, np.asarray(t1_img.affine, dtype=np.float64)


def installed_subjects(subjects: list[str]) -> list[str]:
    """``subjects`` without the demo subjects whose Debian-packaged brain is not installed
    (sub-colin27, sub-inia19), one line on stderr for each one left out."""
    packaged = {
        COLIN27_SUBJECT: (colin27_available, COLIN27_MISSING),
        INIA19_SUBJECT: (inia19_available, INIA19_MISSING),
    }
    kept = []
    for subject in subjects:
        available, missing = packaged.get(subject, (lambda: True, ""))
        if available():
            kept.append(subject)
        else:
            print(missing, file=sys.stderr)
    return kept


def _packaged_brain(path: Path, name: str):
    """The brain image ``path`` of Debian's mricron-data, reoriented to RAS; FileNotFoundError
    naming the package when it is not installed."""
    import nibabel as nib

    if not path.is_file():
        raise FileNotFoundError(
            f"{name} not found at {path}: install the Debian package "
            f"{COLIN27_PACKAGE} (apt-get install {COLIN27_PACKAGE})"
        )
    return nib.as_closest_canonical(nib.load(path))


def _largest_component(inside: np.ndarray) -> np.ndarray:
    """The largest connected component of the bool array ``inside``."""
    from scipy import ndimage

    labels, _ = ndimage.label(inside)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def _colin27():
    img = _packaged_brain(COLIN27_BRAIN, "Colin27")
    raw = np.asarray(img.dataobj, dtype=np.float32)  # uint8, 0 outside the brain
    # The brain: the largest connected component of ch2bet > 0 (drops ~100 specks of a few
    # hundred voxels in all that BET left outside it; ch2bet has no holes).
    mask = _largest_component(raw > 0)
    t1 = np.where(mask, raw / raw[mask].max(), 0.0).astype(np.float32)
    csf, gm, wm = _segment_classes(t1, mask)
    return t1, gm, wm, csf, mask.astype(np.float32), np.asarray(img.affine, dtype=np.float64)


def _inia19():
    from scipy import ndimage

    img = _packaged_brain(INIA19_BRAIN, "INIA19")
    raw = np.asarray(img.dataobj, dtype=np.float32)
    zoom = np.asarray(img.header.get_zooms()[:3], dtype=np.float64) * INIA19_SCALE
    # The scaled brain on a 1 mm grid whose origin is the scaled source origin: output voxel
    # j lies at source voxel j / zoom (cubic; the mask by the same map at 0.5).
    shape = np.ceil((np.array(raw.shape) - 1) * zoom).astype(int) + 1
    scaled = ndimage.affine_transform(raw, np.diag(1.0 / zoom), output_shape=tuple(shape), order=3)
    inside = ndimage.affine_transform(
        (raw > 0).astype(np.float32), np.diag(1.0 / zoom), output_shape=tuple(shape), order=1
    )
    mask = _largest_component(inside > 0.5)
    top = float(np.percentile(scaled[mask], 99.9))
    t1 = np.where(mask, np.clip(scaled / top, 0.0, 1.0), 0.0).astype(np.float32)
    # Four classes, the middle two merged into grey matter: with three, the darkest class
    # (mean 0.42) took the template's dim outer cortex as CSF (0.45 L); with four it keeps
    # the sulci, ventricles and brain edge (0.24 L, mean 0.34).
    csf, gm_dim, gm, wm = _segment_classes(t1, mask, k=INIA19_CLASSES)
    gm = gm_dim + gm
    affine = np.eye(4)
    affine[:3, 3] = img.affine[:3, 3] * INIA19_SCALE
    return t1, gm, wm, csf, mask.astype(np.float32), affine


def _segment_classes(t1: np.ndarray, mask: np.ndarray, k: int = 3) -> list[np.ndarray]:
    """Atropos k-means[``k``] posteriors of a 1 mm ``t1`` inside ``mask``, darkest class first,
    each (X, Y, Z) float32, summing to 1 in the mask and 0 outside it.

    Segmented on a :data:`COLIN27_SEGMENT_MM` grid, inside the coarse voxels whose linear
    interpolation stencil lies wholly in the brain (edge voxels blended with the zeros outside
    would form a spurious dark class); the posteriors are extended outwards by their nearest
    segmented value, resampled back linearly and renormalised in ``mask``. Atropos runs with
    a constant random seed (``r=0``): its default random seed makes the posteriors differ by
    up to 0.2 between runs.
    """
    import ants
    from scipy import ndimage

    image = ants.from_numpy(t1.astype(np.float32))
    coarse = ants.resample_image(image, (COLIN27_SEGMENT_MM,) * 3, use_voxels=False, interp_type=0)
    inside = ants.resample_image_to_target(
        ants.from_numpy(mask.astype(np.float32)), coarse, interp_type="linear"
    ).numpy()
    inside = inside > 0.999

    def like_coarse(arr):
        return ants.from_numpy(arr.astype(np.float32), origin=coarse.origin, spacing=coarse.spacing)

    out = ants.atropos(
        a=coarse,
        x=like_coarse(inside),
        i=f"kmeans[{k}]",
        m=COLIN27_MRF,
        c=f"[{COLIN27_ATROPOS_ITERATIONS},0]",
        r=0,
    )
    nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    probs = []
    for p in out["probabilityimages"]:
        extended = p.numpy()[tuple(nearest)]
        probs.append(
            ants.resample_image_to_target(
                like_coarse(extended), image, interp_type="linear"
            ).numpy()
        )
    probs = np.clip(np.stack(probs), 0.0, None).astype(np.float32) * mask
    total = probs.sum(0)
    probs = np.divide(probs, total, out=np.zeros_like(probs), where=total > 0)
    means = [float((p[mask] * t1[mask]).sum() / max(p[mask].sum(), 1e-6)) for p in probs]
    probs = probs[np.argsort(means)]
    probs[0][mask & (total <= 0)] = 1.0  # (never seen: the extension covers the grid) -> csf
    return list(probs)
