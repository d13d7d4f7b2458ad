"""Classic unsupervised saliency, the methods DiLo compares, and saliency map -> boxes + mask.

* `spectral_residual` / `fine_grained`: OpenCV contrib's static saliency.
* `rbd`: saliency optimisation from robust background detection (Zhu, Liang, Wei, Sun,
  CVPR 2014): boundary connectivity from geodesic distances on the superpixel graph gives a
  background probability; background-weighted contrast gives foreground cues; a least-squares
  optimisation with a smoothness term combines them.
* `geodesic`: geodesic saliency (Wei, Wen, Zhu, Sun, ECCV 2012): a superpixel's saliency is
  its shortest-path distance to the image boundary, small edge weights clipped to zero.
* `markov`: absorbing Markov chain saliency (Jiang, Zhang, Lu, Yang, Yang, ICCV 2013): the
  expected time a random walk from a superpixel takes to be absorbed by copies of the
  boundary superpixels.

All superpixel methods share `superpixel_graph` (scikit-image SLIC, CIE Lab means,
adjacency) and SciPy's sparse graph routines. Maps are float32 in [0, 1] at the input's size.
SciPy and scikit-image are imported where they are used: a proposal worker running selective search
or OpenCV's saliency never pays their start-up (a quarter of a second and more per spawned worker).
"""
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from objcrop.pretrain.proposals.store import SaliencyMask


@dataclass
class SuperpixelGraph:
    labels: np.ndarray      # [H, W] int superpixel index, 0..n-1
    lab: np.ndarray         # [n, 3] mean CIE Lab colour (L in 0..100)
    centre: np.ndarray      # [n, 2] mean (y, x), normalised to [0, 1]
    size: np.ndarray        # [n] pixel count
    edges: np.ndarray       # [m, 2] adjacent pairs i < j
    boundary: np.ndarray    # [k] indices of superpixels touching the image border

    @property
    def n(self) -> int:
        return len(self.lab)


def superpixel_graph(rgb: np.ndarray, n_segments: int = 200, compactness: float = 10.0) -> SuperpixelGraph:
    from skimage.segmentation import slic

    lab_image = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    # SLIC converts to Lab itself; handing it our float Lab image instead yields a plain grid
    # on scikit-image 0.24 (its float-input scaling differs), so it gets the uint8 RGB image.
    labels = slic(rgb, n_segments=n_segments, compactness=compactness, start_label=0,
                  convert2lab=True, enforce_connectivity=True)
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # contiguous 0..n-1
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    lab = np.stack([np.bincount(flat, lab_image[..., c].ravel(), minlength=n) for c in range(3)], 1) / size[:, None]
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    centre = np.stack([np.bincount(flat, ys.ravel() / max(h - 1, 1), minlength=n),
                       np.bincount(flat, xs.ravel() / max(w - 1, 1), minlength=n)], 1) / size[:, None]
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    boundary = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return SuperpixelGraph(labels, lab, centre, size, pairs, boundary)


def _to_pixels(graph: SuperpixelGraph, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    lo, hi = values.min(), values.max()
    values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return values[graph.labels].astype(np.float32)


def _colour_distances(graph: SuperpixelGraph) -> np.ndarray:
    return np.linalg.norm(graph.lab[graph.edges[:, 0]] - graph.lab[graph.edges[:, 1]], axis=1)


def _sparse(n: int, edges: np.ndarray, weights: np.ndarray):
    """The symmetric scipy.sparse CSR matrix of the weighted superpixel graph."""
    from scipy.sparse import coo_matrix

    i, j = edges[:, 0], edges[:, 1]
    return coo_matrix((np.concatenate([weights, weights]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                      shape=(n, n)).tocsr()


# -- RBD -------------------------------------------------------------------------------
def rbd(rgb: np.ndarray, n_segments: int = 200, sigma_clr: float = 10.0, sigma_bndcon: float = 1.0,
        sigma_spa: float = 0.25, mu: float = 0.1) -> np.ndarray:
    """Saliency optimisation from robust background detection (Zhu et al. 2014), with the paper's constants."""
    from scipy.sparse.csgraph import dijkstra

    g = superpixel_graph(rgb, n_segments)
    d_app = _colour_distances(g)
    # Geodesic distance: shortest path over adjacent superpixels weighted by colour distance.
    # (A tiny floor keeps zero-distance edges: SciPy's sparse graphs treat 0 as "no edge".)
    geo = dijkstra(_sparse(g.n, g.edges, np.maximum(d_app, 1e-6)), directed=False)
    similarity = np.exp(-geo ** 2 / (2 * sigma_clr ** 2))
    area = similarity.sum(1)                      # soft area of the region around each superpixel
    len_bnd = similarity[:, g.boundary].sum(1)    # ... and the length of it on the boundary
    bnd_con = len_bnd / np.sqrt(area)
    w_bg = 1.0 - np.exp(-bnd_con ** 2 / (2 * sigma_bndcon ** 2))
    # Background-weighted contrast: colour contrast against nearby likely-background superpixels.
    d_all = np.linalg.norm(g.lab[:, None] - g.lab[None], axis=2)
    d_spa = np.linalg.norm(g.centre[:, None] - g.centre[None], axis=2)
    w_spa = np.exp(-d_spa ** 2 / (2 * sigma_spa ** 2))
    w_ctr = (d_all * w_spa * w_bg[None]).sum(1)
    w_fg = (w_ctr - w_ctr.min()) / max(w_ctr.max() - w_ctr.min(), 1e-12)
    # min_s  sum_i w_bg_i s_i^2 + sum_i w_fg_i (s_i - 1)^2 + sum_ij w_ij (s_i - s_j)^2
    w_smooth = np.exp(-d_app ** 2 / (2 * sigma_clr ** 2)) + mu
    adjacency = _sparse(g.n, g.edges, w_smooth).toarray()
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    system = np.diag(w_bg + w_fg) + laplacian
    s = np.linalg.solve(system, w_fg)
    return _to_pixels(g, np.clip(s, 0, 1))


# -- geodesic saliency -----------------------------------------------------------------
def geodesic(rgb: np.ndarray, n_segments: int = 200) -> np.ndarray:
    """Geodesic saliency (Wei et al. 2012): distance to the boundary along the superpixel graph.

    Edge weights below the average of each superpixel's smallest edge are clipped to zero, the
    paper's "weight clipping" that keeps background texture from accumulating distance.
    """
    from scipy.sparse.csgraph import dijkstra

    g = superpixel_graph(rgb, n_segments)
    d_app = _colour_distances(g)
    smallest = np.full(g.n, np.inf)
    np.minimum.at(smallest, g.edges[:, 0], d_app)
    np.minimum.at(smallest, g.edges[:, 1], d_app)
    threshold = float(np.mean(smallest[np.isfinite(smallest)])) if np.isfinite(smallest).any() else 0.0
    weights = np.maximum(d_app - threshold, 0.0) + 1e-6
    distance = dijkstra(_sparse(g.n, g.edges, weights), directed=False, indices=g.boundary, min_only=True)
    return _to_pixels(g, np.where(np.isfinite(distance), distance, 0.0))


# -- absorbing Markov chain --------------------------------------------------------------
def markov(rgb: np.ndarray, n_segments: int = 200, sigma2: float = 0.1) -> np.ndarray:
    """Absorbing Markov chain saliency (Jiang et al. 2013).

    Transient nodes: all superpixels, linked to their neighbours and neighbours' neighbours, and
    all boundary superpixels linked to each other. Absorbing nodes: copies of the boundary
    superpixels, with the originals' edges. Saliency: expected steps before absorption, N 1 with
    N = (I - Q)^-1.
    """
    g = superpixel_graph(rgb, n_segments)
    n = g.n
    lab = g.lab / max(np.abs(g.lab).max(), 1e-12)  # features normalised as in the paper's code
    adjacency = _sparse(n, g.edges, np.ones(len(g.edges))).toarray() > 0
    two_ring = adjacency | ((adjacency.astype(np.int32) @ adjacency.astype(np.int32)) > 0)
    np.fill_diagonal(two_ring, False)
    two_ring[np.ix_(g.boundary, g.boundary)] = True
    np.fill_diagonal(two_ring, False)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=2)
    affinity = np.where(two_ring, np.exp(-d / sigma2), 0.0)
    # Each boundary superpixel has an absorbing copy with the original's edges: a walk at node i
    # is absorbed with probability proportional to its affinity to the boundary.
    absorbing = affinity[:, g.boundary].sum(1)
    degree = affinity.sum(1) + absorbing
    q = affinity / np.maximum(degree, 1e-12)[:, None]
    times = np.linalg.solve(np.eye(n) - q, np.ones(n))
    return _to_pixels(g, times)


# -- OpenCV ----------------------------------------------------------------------------
def spectral_residual(rgb: np.ndarray) -> np.ndarray:
    ok, sal = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return _normalise(sal if ok else np.zeros(rgb.shape[:2]))


def fine_grained(rgb: np.ndarray) -> np.ndarray:
    ok, sal = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return _normalise(sal if ok else np.zeros(rgb.shape[:2]))


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


# -- map -> boxes ----------------------------------------------------------------------
# Extra thresholds (fractions of the map's range) besides Otsu's: a classic saliency map of a
# cluttered scene is one blob at Otsu's level, while the objects inside it separate at higher
# levels and objects of weaker contrast appear at lower ones.
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def saliency_boxes(saliency: np.ndarray, min_area_fraction: float = 0.002,
                   levels=LEVELS) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold (Otsu, then `levels`) -> connected components -> one box per component.

    Returns (boxes float32 [n, 4] XYXY, scores float32 [n] = mean saliency inside the
    component, mask uint8 [H, W] = the Otsu foreground, kept for copy-paste). The mask is a
    `SaliencyMask` carrying the map itself (uint8 0..255), which the proposal store keeps beside
    it as DiLo's soft alpha (`ProposalStore.get_alpha`). Boxes found at
    several levels are kept once, with their best score; a component smaller than
    `min_area_fraction` of the image is dropped as noise.
    """
    saliency = np.clip(np.asarray(saliency, np.float32), 0, 1)
    sal8 = np.round(saliency * 255).astype(np.uint8)
    h, w = sal8.shape
    if sal8.max() == sal8.min():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((h, w), np.uint8)
    otsu, mask = cv2.threshold(sal8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    best = {}
    masks = [mask] + [(sal8 > round(level * 255)).astype(np.uint8) for level in levels if round(level * 255) != otsu]
    for level_mask in masks:
        for box, score in _components(level_mask, saliency, max(1.0, min_area_fraction * h * w)):
            if score > best.get(box, -1.0):
                best[box] = score
    ordered = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    boxes = np.asarray([b for b, _ in ordered], np.float32).reshape(-1, 4)
    scores = np.asarray([s for _, s in ordered], np.float32)
    return boxes, scores, SaliencyMask(mask, sal8)


def _components(mask: np.ndarray, saliency: np.ndarray, min_area: float):
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sums = np.bincount(labels.ravel(), weights=saliency.ravel().astype(np.float64), minlength=count)
    for k in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        if area >= min_area:
            yield (x, y, x + bw, y + bh), float(sums[k] / area)


SALIENCY_METHODS = {
    "saliency-spectral": spectral_residual,
    "saliency-fine-grained": fine_grained,
    "saliency-rbd": rbd,
    "saliency-gs": geodesic,
    "saliency-mc": markov,
}
