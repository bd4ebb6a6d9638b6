"""The typed state that flows through the processing stages.

One frozen, host-side :class:`ProcessState` replaces the dictionaries that used to carry the
output file's field names between stages. Each stage returns a new state with
:func:`dataclasses.replace`; nothing here knows an HDF5 name (those live only in
:mod:`jfx.io.process_h5`).

Arrays are numpy (host). Shapes: ``n`` = selected images, ``S`` = spot capacity
(``--max-spots``), ``L`` = lattice capacity (``index.max_lattices``). Lattice bases are
float64 (3, 3) matrices whose rows are a, b, c in Å in the NXmx/McStas lab frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jfx.models.geometry import Geometry
from jfx.models.images import ImageStats
from jfx.models.spots import SpotList, Spots3D


@dataclasses.dataclass(frozen=True)
class ImageSelection:
    """Selected images: ``indices`` (n,) int64, 0-based; ``warnings`` for the user."""

    indices: np.ndarray
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SpotImageStats:
    """Per-image results of spot finding beyond the spot list (all (n,)).

    Attributes:
        bkg_estimate: float32 background estimate (photons/pixel).
        resolution_estimate: float32 resolution estimate (Å; NaN: too few spots).
        n_ice: int32 kept spots on ice rings.
    """

    bkg_estimate: np.ndarray
    resolution_estimate: np.ndarray
    n_ice: np.ndarray


@dataclasses.dataclass(frozen=True)
class AzintProfiles:
    """Azimuthal-integration results.

    Attributes:
        bin_to_q: (n_bins,) float32 q of each bin centre (Å⁻¹, q = 4π sin θ / λ).
        profile: (n, n_bins) float32 corrected mean intensity per bin.
        bin_to_azimuth_deg: (n_azim,) float32 azimuth-bin centres (deg) or None.
        profile_2d: (n, n_azim, n_bins) float32, or None.
    """

    bin_to_q: np.ndarray
    profile: np.ndarray
    bin_to_azimuth_deg: np.ndarray | None = None
    profile_2d: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class IndexingTable:
    """Indexing results of every selected image, every lattice kept.

    Attributes:
        algorithm: the indexer used (``ffbidx`` | ``fft`` | ``fftw`` | ``none``).
        mode: ``stills`` | ``two-pass`` | ``single-pass`` | ``forced`` (+ a note when the
            geometry had to be refined or pooled first).
        status: (n,) int32 :class:`jfx.index.base.IndexStatus`.
        basis: (n, L, 3, 3) float64 bases (NaN: no lattice in that slot). Rotation: the
            lattice at each image's centre angle in slot 0.
        hkl: (n, S, 3) int32 Miller indices of each spot in its lattice (0: unindexed).
        lattice_id: (n, S) int32 lattice slot of each spot, −1 = unindexed.
        bravais: (n,) Bravais symbol of the first lattice (``""`` if none).
        n_attempted: images with enough spots to try.
        basis0: (3, 3) float64 angle-0 basis of rotation indexing, else None.
        geometry: the geometry the lattices refer to (the stored one, or a refined one when
            indexing needed a geometry rescue).
    """

    algorithm: str
    mode: str
    status: np.ndarray
    basis: np.ndarray
    hkl: np.ndarray
    lattice_id: np.ndarray
    bravais: tuple[str, ...]
    n_attempted: int
    geometry: Geometry
    basis0: np.ndarray | None = None

    @property
    def indexed(self) -> np.ndarray:
        """(n,) bool: image indexed."""
        return self.status == 0

    @property
    def n_indexed(self) -> int:
        return int(np.sum(self.indexed))

    def spots_of_lattice(self, slot: int = 0) -> np.ndarray:
        """(n, S) bool: spots assigned to lattice ``slot``."""
        return self.lattice_id == slot


@dataclasses.dataclass(frozen=True)
class RefinementTable:
    """Geometry refinement results.

    Attributes:
        mode: ``stills`` | ``rotation``.
        geometry: the geometry for prediction and for the output file (stills: the detector
            pooled over the stills; rotation: the refined sweep model).
        images: (m,) int64 positions (into the selection) of the refined images (stills),
            or every selected position (rotation).
        basis: stills (m, 3, 3) per-image refined lattices; rotation (3, 3) angle-0 basis.
        image_geometry: stills: the per-image refined geometries (leaves with a leading
            (m,) axis), else None.
        status: (m,) int32 :class:`jfx.refine.refine.RefineStatus` (rotation: (1,)).
        rmsd_px: median rms position residual (px); ``rmsd_phi_deg`` (rotation) or None.
        refined: images (stills) / sweeps (rotation) converged.
        lattices_replace_indexing: stills: the refined lattices are written in place of the
            indexing ones (with a space group only: without one a still's refined cell is
            triclinic and less exact than the indexer's symmetrised one).
        scan_varying_edges: (n_blocks + 1,) frame edges of scan-varying blocks, or None.
        scan_varying_basis: (n_blocks, 3, 3) angle-0 basis of each block, or None.
        n_spots: rotation: spots in the final scan-static refinement (None: not recorded).
        n_outliers: rotation: spots rejected as outliers before it
            (``refine.outlier_probability``).
        rmsd_all: rotation with outlier rejection: (rmsd px, rmsd φ deg) of the refinement
            before the rejection (all assigned spots), else None.
    """

    mode: str
    geometry: Geometry
    images: np.ndarray
    basis: np.ndarray
    status: np.ndarray
    rmsd_px: float
    refined: int
    image_geometry: Geometry | None = None
    rmsd_phi_deg: float | None = None
    lattices_replace_indexing: bool = False
    scan_varying_edges: np.ndarray | None = None
    scan_varying_basis: np.ndarray | None = None
    n_spots: int | None = None
    n_outliers: int = 0
    rmsd_all: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class RockingWidth:
    """Mosaic spread σ_M of a rotation sweep's prediction and integration.

    Attributes:
        sigma_deg: σ_M (deg) of the recorded fractions and of the frames summed.
        source: ``setting`` (``integrate.mosaicity_deg``), ``partials`` (fitted to the
            integrated partials, :func:`jfx.integrate.mosaicity.estimate_mosaicity`),
            ``spots`` (from the strong spots only) or ``fallback`` (too little data).
        window_deg: σ_M of the prediction window the frames were integrated in.
        n_used: reflections (``partials``) or spot passages (``spots``) of the estimate.
    """

    sigma_deg: float
    source: str
    window_deg: float
    n_used: int = 0


@dataclasses.dataclass(frozen=True)
class PixelRefinementTable:
    """Per-still results of pixel refinement (``-r pixelrefine``,
    :mod:`jfx.pixelrefine.fit`).

    Attributes:
        images: (m,) int64 positions (into the selection) of the stills fitted.
        status: (m,) int32 :data:`jfx.pixelrefine.fit.STATUS` codes (0 = ok).
        basis: (m, 3, 3) float64 refined lattices (rows a, b, c, Å, lab frame); the
            spot-refined start where the fit did not succeed.
        values: name → (m,) float64 (``cell``: (m, 6) Å/deg) refined physical parameters:
            ``scale``, ``b_factor`` (Å²), ``rotation_deg`` (orientation change from the
            spot refinement), the partiality and profile models' own (e.g.
            ``mosaicity_deg``, ``domain_invA``, ``bandwidth_fwhm``, ``sigma_px``,
            ``radial_growth_px``).
        sigmas: name → (m,) float64 standard uncertainties of ``values`` (NaN: fixed or
            not fitted).
        cost: (m,) float64 final ½Σr²; n_fit: (m,) int32 reflections that drove the fit;
        iterations: (m,) int32 LM iterations.
        population: the median partiality parameters (physical values, e.g.
            ``mosaicity_deg``) that centred every still's prior (the pilot's, or the
            previous cycle's); empty without either.
        n_pilot: stills of the pilot that converged (0 in later cycles).
        params: the fitted parameters per still other than the lattice (``group.name`` →
            (m,), e.g. ``partiality.log_mosaicity``, ``scale.log_g``): a later cycle starts
            from them.
        cycle: the refinement cycle (1 against the reference, 2… against the data's
            own merge); cycles: of how many; seconds: wall time of this cycle;
            seconds_by_part: of it, host preparation (``prepare``: reading, boxes,
            background), ``fit`` and ``integrate``.
    """

    images: np.ndarray
    status: np.ndarray
    basis: np.ndarray
    values: Mapping[str, np.ndarray]
    sigmas: Mapping[str, np.ndarray]
    cost: np.ndarray
    n_fit: np.ndarray
    iterations: np.ndarray
    population: Mapping[str, float] = dataclasses.field(default_factory=dict)
    n_pilot: int = 0
    params: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cycle: int = 1
    cycles: int = 1
    seconds: float = 0.0
    seconds_by_part: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def n_ok(self) -> int:
        return int(np.sum(self.status == 0))


@dataclasses.dataclass(frozen=True)
class ProcessState:
    """Everything one ``jfjoch_process`` run knows, stage by stage.

    Attributes:
        selection: the images processed.
        geometry: the geometry as read from the master file.
        stored_space_group: the master file's space group (None: not stored).
        image_stats: per-image statistics (spot-finding stage).
        spots: the spot lists (host numpy :class:`SpotList`).
        spot_stats: per-image spot-finding numbers beyond the spot list.
        spots3d: rotation data: the spots joined across consecutive images
            (:class:`jfx.models.spots.Spots3D`, from every filtered spot before the
            ``max_spots`` truncation); None for stills. Rotation indexing (pass 1) and
            refinement use these; ``spots`` stays the per-image output.
        azint: azimuthal profiles (None: not run).
        indexing: indexing table (None: not run).
        refinement: refinement results (None: not run).
        reflections: integrated reflections (None: not run).
        rocking_width: σ_M the rotation prediction used (None: stills or not run).
        pixel_refinement: per-still pixel-refinement results (``-r pixelrefine``), or
            None.
        space_group: the space group used for integration and merging (``-S``, else the
            master's when the cell fits it), None: P1.
        unit_cell: (6,) Å/deg cell of the processed data (median of the indexed lattices,
            or the rotation lattice), None before indexing.
        scaling: :class:`jfx.scale.scaling.ScalingResult` (None unless merging ran).
        timings_s: wall time per part (s).
        warnings: messages for the user.
    """

    selection: ImageSelection
    geometry: Geometry
    stored_space_group: int | None = None
    image_stats: ImageStats | None = None
    spots: SpotList | None = None
    spot_stats: SpotImageStats | None = None
    spots3d: Spots3D | None = None
    azint: AzintProfiles | None = None
    indexing: IndexingTable | None = None
    refinement: RefinementTable | None = None
    reflections: Any = None
    rocking_width: RockingWidth | None = None
    pixel_refinement: PixelRefinementTable | None = None
    space_group: int | None = None
    unit_cell: np.ndarray | None = None
    scaling: Any = None
    timings_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def n_images(self) -> int:
        return len(self.selection.indices)

    @property
    def final_geometry(self) -> Geometry:
        """The geometry the results refer to: refined, else the indexing one, else as read."""
        if self.refinement is not None:
            return self.refinement.geometry
        if self.indexing is not None:
            return self.indexing.geometry
        return self.geometry

    @property
    def is_rotation(self) -> bool:
        """Rotation results: the sweep was indexed with one angle-0 lattice."""
        return self.indexing is not None and self.indexing.basis0 is not None

    def image_lattices(self) -> np.ndarray:
        """(n, 3, 3) float64 first lattice of every image (NaN: not indexed): the
        pixel-refined one (``-r pixelrefine``, fitted stills), else the refined one where
        refinement replaces the indexing lattice, else the indexing one."""
        if self.indexing is None:
            return np.full((self.n_images, 3, 3), np.nan)
        out = np.array(self.indexing.basis[:, 0], dtype=np.float64)
        r = self.refinement
        if r is not None and r.mode == "stills" and r.lattices_replace_indexing:
            b = np.asarray(r.basis, np.float64).reshape(-1, 3, 3)
            ok = np.all(np.isfinite(b.reshape(len(b), -1)), axis=1)
            out[np.asarray(r.images)[ok]] = b[ok]
        p = self.pixel_refinement
        if p is not None:  # the lattices the reflections were predicted and integrated with
            ok = p.status <= 1
            out[np.asarray(p.images)[ok]] = np.asarray(p.basis)[ok]
        return out

    def still_models(self) -> tuple[np.ndarray, np.ndarray, list[Geometry]]:
        """The indexed stills and the model each is predicted with: ``(positions (k,)
        int64 into the selection, lattices (k, 3, 3) float64, geometries)`` — the stills
        refinement's per-image lattice and geometry where it refined the image, else the
        indexing lattice and geometry."""
        import jax

        ix = self.indexing
        sel = np.flatnonzero(ix.indexed)
        basis = np.array(ix.basis[sel, 0], np.float64)
        geoms: list[Geometry] = [ix.geometry] * sel.size
        r = self.refinement
        if r is not None and r.mode == "stills":
            pos = {int(p): j for j, p in enumerate(r.images)}
            for k, p in enumerate(sel):
                j = pos.get(int(p))
                if j is not None:
                    basis[k] = r.basis[j]
                    geoms[k] = jax.tree_util.tree_map(lambda a, j=j: np.asarray(a)[j],
                                                      r.image_geometry)
        return sel, basis, geoms

    def rotation_basis0(self) -> np.ndarray | None:
        """(3, 3) angle-0 basis of the sweep: refined, else indexed; None for stills."""
        if self.refinement is not None and self.refinement.mode == "rotation":
            return np.asarray(self.refinement.basis, np.float64).reshape(3, 3)
        if self.indexing is not None and self.indexing.basis0 is not None:
            return np.asarray(self.indexing.basis0, np.float64).reshape(3, 3)
        return None

    def with_time(self, part: str, seconds: float) -> ProcessState:
        """A copy with ``timings_s[part]`` increased by ``seconds``."""
        t = dict(self.timings_s)
        t[part] = t.get(part, 0.0) + float(seconds)
        return dataclasses.replace(self, timings_s=t)
