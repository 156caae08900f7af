"""The first layer's products over moved copies of the photos, without multiplying the copies.

`prepare.shift` adds four copies of the training photos moved up, down, left and right
(`data.with_shifted`), so X (12288, 5·m₀) is five blocks of m₀ columns: block 0 the
photos (with their mirror images when `prepare.flip`), block j its move Tⱼ. A move is
linear in the pixels (a gather: each output pixel copies one source pixel, the edge rows or
columns repeated), and centring subtracts the same mean μ from every column, so

    Xⱼ = Tⱼ X₀ + cⱼ 1ᵀ,   cⱼ = Tⱼ μ − μ   (the moved mean's leftover; c₀ = 0)

and the direct path's two 12288-wide products need only X₀:

    Zⱼ  = (W Tⱼ) X₀ + W cⱼ                 forward: one (5·n₁ × 12288)·(12288 × m₀) product
    dW  = Σⱼ (dZⱼ X₀ᵀ) Tⱼᵀ + Σⱼ (dZⱼ 1) cⱼᵀ   backward: one (5·n₁ × m₀)·(m₀ × 12288) product

W Tⱼ and (·) Tⱼᵀ are slice copies of n₁ × 12288 weights (0.03-0.12 ms each here), not
products.
The arithmetic is the same as over the copies, in the same precision; what changes is that
BLAS reads 12288 × m₀ inputs instead of 5× as many, and multiplies a 100-row matrix
instead of a 20-row one, which its kernels run far nearer their peak
(bench/train_speed.py, contender "itsacat direct f"). Only full-batch steps use it:
a mini-batch holds an arbitrary mix of photos and moves.

Arrays: weights W (n₁, 12288) viewed as (n₁, 64, 64, 3) images in (row, column, channel)
order, the layout `data.preprocess` flattens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.config import MAX_SHIFT
from itsacat.data import IMAGE_SIZE, N_X, shift_moves

Move = tuple[int, int]  # (dy, dx): output pixel (r, c) copies source (clip(r+dy), clip(c+dx))
ROW, COL = 1, 2  # axes of an (n, 64, 64, 3) view
SIDE = IMAGE_SIZE


def moves(shift: int) -> tuple[Move, ...]:
    """Each block's move, in the order `data.with_shifted` lays the copies out."""
    return ((0, 0), *shift_moves(shift))


@dataclasses.dataclass(frozen=True)
class Copies:
    """How the training photos are laid out: `originals` columns, then one block as wide
    for each further move."""

    originals: int
    moves: tuple[Move, ...]

    @property
    def photos(self) -> int:
        return self.originals * len(self.moves)


def pixel_sources(move: Move) -> NDArray[np.intp]:
    """(12288,) the source pixel each output pixel of `move` copies (flat indices)."""
    dy, dx = move
    r = np.clip(np.arange(SIDE) + dy, 0, SIDE - 1)
    c = np.clip(np.arange(SIDE) + dx, 0, SIDE - 1)
    flat = np.arange(N_X).reshape(SIDE, SIDE, 3)
    return flat[r][:, c].reshape(N_X)


def find_copies(
    images: NDArray[np.uint8], shifts: range = range(1, MAX_SHIFT + 1)
) -> Copies | None:
    """The layout of training photos built with a `prepare.shift` in `shifts`, if they
    really are laid out that way (every copy checked pixel for pixel), else None."""
    m, blocks = images.shape[0], len(moves(1))
    if m % blocks or images.shape[1:] != (SIDE, SIDE, 3):
        return None
    m0 = m // blocks
    flat = images.reshape(m, N_X)
    originals = flat[:m0]
    for shift in shifts:
        layout = moves(shift)
        if not np.array_equal(flat[m0], originals[0, pixel_sources(layout[1])]):
            continue  # the first copy's first photo rules most shifts out cheaply
        if all(
            np.array_equal(flat[j * m0 : (j + 1) * m0], originals[:, pixel_sources(move)])
            for j, move in enumerate(layout[1:], 1)
        ):
            return Copies(m0, layout)
    return None


def _axis(move: Move) -> tuple[int, int]:
    dy, dx = move
    if dy and dx:
        raise ValueError(f"a move is along one axis, got {move}")
    return (ROW, dy) if dy else (COL, dx)


def _lines(a: Any, axis: int, start: int, stop: int) -> Any:
    return a[:, start:stop] if axis == ROW else a[:, :, start:stop]


def gather_add(a: Any, move: Move, out: Any) -> None:
    """out += a moved: out[.., i, ..] += a[.., clip(i + d), ..] along the move's axis
    (a, out: (n, 64, 64, 3))."""
    axis, d = _axis(move)
    if d == 0:
        out += a
        return
    if d > 0:  # the last d lines repeat the edge line
        inner, edge_out, edge_in = (0, SIDE - d, d, SIDE), (SIDE - d, SIDE), (SIDE - 1, SIDE)
    else:
        e = -d
        inner, edge_out, edge_in = (e, SIDE, 0, SIDE - e), (0, e), (0, 1)
    o0, o1, i0, i1 = inner
    _lines(out, axis, o0, o1)[...] += _lines(a, axis, i0, i1)
    _lines(out, axis, *edge_out)[...] += _lines(a, axis, *edge_in)


def adjoint(a: Any, move: Move, out: Any) -> None:
    """out = a Tᵀ: every source line gets the sum of the output lines that copy it
    (a, out: (n, 64, 64, 3)); the transpose of `gather_add`'s move."""
    axis, d = _axis(move)
    if d == 0:
        out[...] = a
        return
    if d > 0:  # the edge line collects d + 1 output lines
        _lines(out, axis, 0, d)[...] = 0
        _lines(out, axis, d, SIDE - 1)[...] = _lines(a, axis, 0, SIDE - 1 - d)
        _lines(out, axis, SIDE - 1, SIDE)[...] = _lines(a, axis, SIDE - 1 - d, SIDE).sum(
            axis=axis, keepdims=True
        )
    else:
        e = -d
        _lines(out, axis, SIDE - e, SIDE)[...] = 0
        _lines(out, axis, 1, SIDE - e)[...] = _lines(a, axis, e + 1, SIDE)
        _lines(out, axis, 0, 1)[...] = _lines(a, axis, 0, e + 1).sum(axis=axis, keepdims=True)


def images_of(W: Any) -> Any:
    """(n, 12288) rows → (n, 64, 64, 3) views."""
    return W.reshape(W.shape[0], SIDE, SIDE, 3)


class Factored:
    """The direct path's first-layer products for X laid out as `copies` says.

    Built once per fit: X₀ is a view of X's first block (no copy) and the leftovers cⱼ are
    measured from X itself (block means), so whatever centring the data had, the products
    equal those over X up to rounding.
    """

    def __init__(self, X: Any, copies: Copies) -> None:
        n_x, m = X.shape
        if m != copies.photos or n_x != N_X:
            raise ValueError(f"X {X.shape} is not laid out as {copies}")
        m0, J = copies.originals, len(copies.moves)
        self.copies, self.m0, self.J = copies, m0, J
        self.X0 = X[:, :m0]  # (12288, m₀) view
        mean0 = np.asarray(self.X0.mean(axis=1, dtype=np.float64))
        C = np.zeros((n_x, J))
        for j, move in enumerate(copies.moves[1:], 1):
            block = X[:, j * m0 : (j + 1) * m0].mean(axis=1, dtype=np.float64)
            C[:, j] = np.asarray(block) - mean0[pixel_sources(move)]
        self.C = C.astype(X.dtype)  # (12288, J): cⱼ, c₀ = 0
        self._stacked: Any = None  # (J·n₁, 12288) W Tⱼ, stacked

    def stacked_weights(self, W: Any) -> Any:
        """[W T₀; W T₁; …] (J·n₁, 12288)."""
        n1 = W.shape[0]
        if self._stacked is None or self._stacked.shape[0] != self.J * n1:
            self._stacked = np.empty((self.J * n1, W.shape[1]), W.dtype)
        S = self._stacked
        for j, move in enumerate(self.copies.moves):
            adjoint(images_of(W), move, images_of(S[j * n1 : (j + 1) * n1]))
        return S

    def first(self, W: Any, b: Any, stacked_product: Any) -> Any:
        """Z[0] (n₁, m) = W X + b; `stacked_product(S)` returns S X₀ (J·n₁, m₀)."""
        n1 = W.shape[0]
        ZS = stacked_product(self.stacked_weights(W))  # (J·n₁, m₀)
        Z = np.empty((n1, self.J, self.m0), W.dtype)
        Z[...] = ZS.reshape(self.J, n1, self.m0).transpose(1, 0, 2)
        Z += (W @ self.C)[:, :, None]  # W cⱼ
        Z = Z.reshape(n1, self.J * self.m0)
        Z += b
        return Z

    def grad(self, dZ: Any, stacked_product: Any) -> Any:
        """dW (n₁, 12288) = dZ Xᵀ; `stacked_product(dZS)` returns dZS X₀ᵀ (J·n₁, 12288)."""
        n1 = dZ.shape[0]
        by_block = dZ.reshape(n1, self.J, self.m0)
        dZS = np.ascontiguousarray(by_block.transpose(1, 0, 2)).reshape(self.J * n1, self.m0)
        D = stacked_product(dZS)  # (J·n₁, 12288): dZⱼ X₀ᵀ
        dW = by_block.sum(axis=2) @ self.C.T  # Σⱼ (dZⱼ 1) cⱼᵀ
        out = images_of(dW)
        for j, move in enumerate(self.copies.moves):
            gather_add(images_of(D[j * n1 : (j + 1) * n1]), move, out)
        return dW
