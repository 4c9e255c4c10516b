"""Expression heads in a form that makes per-gene overlays cheap.

Every supported head is written as ``out_g = act(hidden(E) @ weight[:, g] + bias[g])``:

- the SEAL image->gene decoder (D -> 512 -> G, ReLU): ``hidden`` = everything before
  its last linear layer (cached once per store: n_tiles x 512), ``act`` = its output
  activation, detected numerically;
- a linear probe (the ridge head of ``bench --save-head``, or any callable that is
  affine in the embedding): ``weight`` / ``bias`` are recovered exactly from the
  callable; with few genes ``hidden`` is all gene outputs at once, otherwise a
  low-rank factor ``E @ U`` of the weight.

A gene switch is then one ``(n, H) @ (H,)`` product on the cached hidden layer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import napari_seal.training.runs as runs
from napari_seal.errors import BadInputError, GeneQueryError

__all__ = [
    "ExpressionHead",
    "head_from_linear",
    "head_from_module",
    "head_from_run_dir",
    "match_gene",
]

# with at most this many genes, a linear head caches all outputs (no matvec at all)
_SMALL_PANEL = 256


class _Stop(Exception):  # noqa: N818 - control flow, never escapes
    """Raised by a hook to stop a forward pass once the hidden layer is known."""


@dataclass
class ExpressionHead:
    """``out_g = act(hidden(E) @ weight[:, g] + bias[g])`` for every gene ``g``.

    Parameters
    ----------
    genes
        Output gene names, in order.
    hidden_fn
        ``(n, D) float32 -> (n, H) float32``.
    weight
        ``(H, G)``; ``None`` when ``hidden_fn`` already gives every gene's output.
    bias
        ``(G,)``; ignored when ``weight`` is ``None``.
    activation
        ``"identity"`` or ``"relu"``.
    name
        What the head is (for messages and provenance).
    """

    genes: list[str]
    hidden_fn: Callable[[np.ndarray], np.ndarray]
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    activation: str = "identity"
    name: str = "head"
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.genes = [str(g) for g in self.genes]
        # (G, H) rows: one gene's weights are contiguous, so a switch is one gemv
        self._weight_rows = (
            None
            if self.weight is None
            else np.ascontiguousarray(self.weight.T, dtype=np.float32)
        )
        self._index = {g: i for i, g in enumerate(self.genes)}
        self._upper = {g.upper(): i for i, g in enumerate(self.genes)}

    def index(self, genes: str | Sequence[str] | None) -> np.ndarray:
        """Column indices of ``genes`` (all genes when ``None``).

        Raises
        ------
        GeneQueryError
            A gene is not predicted by this head (suggests close names).
        """
        if genes is None:
            return np.arange(len(self.genes))
        if isinstance(genes, str):
            genes = [genes]
        out = []
        for gene in genes:
            i = self._index.get(gene, self._upper.get(str(gene).upper()))
            if i is None:
                import difflib

                close = difflib.get_close_matches(
                    str(gene).upper(), list(self._upper), 3
                )
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                msg = (
                    f"gene {gene!r} is not predicted by {self.name} ({len(self.genes)} "
                    f"genes){hint}; pick a gene of its panel"
                )
                raise GeneQueryError(msg)
            out.append(i)
        return np.asarray(out, dtype=np.int64)

    def hidden(self, embeddings: np.ndarray) -> np.ndarray:
        """The per-tile hidden layer ``(n, H)`` float32."""
        return np.asarray(
            self.hidden_fn(np.asarray(embeddings, dtype=np.float32)), dtype=np.float32
        )

    def output(self, hidden: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Gene outputs ``(n, len(index))`` from a hidden layer."""
        if self.weight is None:
            return np.asarray(hidden[:, index], dtype=np.float32)
        if len(index) == 1:  # the overlay case: a matrix-vector product
            out = (hidden @ self._weight_rows[index[0]])[:, None]
            out += self.bias[index]
        else:
            out = hidden @ self.weight[:, index] + self.bias[index]
        if self.activation == "relu":
            np.maximum(out, 0.0, out=out)
        return out.astype(np.float32, copy=False)

    def predict(
        self, embeddings: np.ndarray, genes: Sequence[str] | None = None
    ) -> np.ndarray:
        """Predicted expression ``(n, G)`` for ``genes`` (all when ``None``)."""
        return self.output(self.hidden(embeddings), self.index(genes))


def head_from_module(
    module: Any,
    genes: Sequence[str],
    *,
    name: str = "decoder",
    embed_dim: int | None = None,
    batch_size: int = 8192,
) -> ExpressionHead:
    """Split a torch decoder at its last ``nn.Linear`` (hidden layer + output layer).

    The output activation (identity or ReLU) is detected on random inputs; a module
    whose output is neither falls back to caching every gene's output.
    """
    import torch
    from torch import nn

    module = module.eval()
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        msg = f"{name} has no linear layer; it cannot be used as an expression head"
        raise BadInputError(msg)
    last = linears[-1]
    if last.out_features != len(genes):
        msg = (
            f"{name} predicts {last.out_features} values but its panel has "
            f"{len(genes)} genes; the run folder is inconsistent"
        )
        raise BadInputError(msg)
    param = next(module.parameters())
    captured: list[torch.Tensor] = []

    def grab(_mod: Any, args: tuple) -> None:
        captured.append(args[0])
        raise _Stop

    def run(fn: Callable, emb: np.ndarray) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for i in range(0, len(emb), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(emb[i : i + batch_size]))
                outs.append(fn(x.to(param.device, param.dtype)).float().cpu().numpy())
        if not outs:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(outs, axis=0)

    def hidden_of(x: torch.Tensor) -> torch.Tensor:
        handle = last.register_forward_pre_hook(grab)
        try:
            module(x)
        except _Stop:
            return captured.pop()
        finally:
            handle.remove()
        msg = f"{name}: its last linear layer was not called in forward"
        raise BadInputError(msg)

    weight = last.weight.detach().float().cpu().numpy().T.copy()  # (H, G)
    bias = (
        last.bias.detach().float().cpu().numpy().copy()
        if last.bias is not None
        else np.zeros(len(genes), np.float32)
    )
    rng = np.random.default_rng(0)
    dim = int(embed_dim or linears[0].in_features)
    probe = rng.normal(size=(16, dim)).astype(np.float32)
    full = run(module, probe)
    lin = run(hidden_of, probe) @ weight + bias
    tol = {"rtol": 1e-4, "atol": 1e-4 * (1 + float(np.abs(lin).max()))}
    if np.allclose(full, lin, **tol):
        activation = "identity"
    elif np.allclose(full, np.maximum(lin, 0), **tol):
        activation = "relu"
    else:  # unknown output transform: cache all outputs
        return ExpressionHead(list(genes), lambda e: run(module, e), name=name)
    return ExpressionHead(
        list(genes),
        lambda e: run(hidden_of, e),
        weight.astype(np.float32),
        bias.astype(np.float32),
        activation,
        name=name,
    )


def head_from_linear(
    fn: Callable[[np.ndarray], np.ndarray],
    genes: Sequence[str],
    *,
    embed_dim: int,
    name: str = "linear head",
) -> ExpressionHead:
    """Recover an affine head ``fn(E) = E @ W + b`` exactly from the callable.

    Raises
    ------
    BadInputError
        ``fn`` is not affine in the embedding.
    """
    eye = np.eye(embed_dim, dtype=np.float64)
    b = np.asarray(fn(np.zeros((1, embed_dim), np.float32)), np.float64)[0]
    w = np.asarray(fn(eye.astype(np.float32)), np.float64) - b  # (D, G)
    if w.shape[1] != len(genes):
        msg = f"{name} gives {w.shape[1]} outputs for {len(genes)} genes"
        raise BadInputError(msg)
    probe = np.random.default_rng(0).normal(size=(8, embed_dim)).astype(np.float32)
    got = np.asarray(fn(probe), np.float64)
    want = probe.astype(np.float64) @ w + b
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (1 + np.abs(want).max())):
        msg = f"{name} is not linear in the embedding; pass a SEAL run or a ridge head"
        raise BadInputError(msg)
    w32, b32 = w.astype(np.float32), b.astype(np.float32)
    if len(genes) <= _SMALL_PANEL:  # cache all outputs: a switch is a column read
        return ExpressionHead(list(genes), lambda e: e @ w32 + b32, name=name)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    rank = max(1, int((s > s[0] * 1e-7).sum())) if s.size and s[0] > 0 else 1
    proj = (u[:, :rank] * s[:rank]).astype(np.float32)  # (D, r)
    return ExpressionHead(
        list(genes),
        lambda e: e @ proj,
        vt[:rank].astype(np.float32),
        b32,
        "identity",
        name=name,
    )


_DECODER_KEYS = {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}


def head_from_run_dir(run: Path) -> ExpressionHead | None:
    """The decoder of a finished run folder, read without building the encoder.

    Reads ``panel.json`` and the ``decoder.*`` arrays of ``heads.safetensors``
    (numpy only: no torch, no LoRA merge), so a viewer can load a run's head on its
    event loop. Returns None when the folder is not a finished run or its decoder is
    not the standard ``Linear -> ReLU -> Linear -> ReLU`` (then load the run).
    """
    import json

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    files = [run / n for n in (runs.DONE, runs.PANEL, runs.HEADS)]
    if not all(f.is_file() for f in files):
        return None
    try:
        genes = list(json.loads(files[1].read_text("utf-8"))["genes"])
        arrays = load_file(str(files[2]))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
    dec = {
        k[len("decoder.") :]: v for k, v in arrays.items() if k.startswith("decoder.")
    }
    if set(dec) != _DECODER_KEYS:
        return None
    w1, b1 = (
        dec["net.0.weight"].astype(np.float32),
        dec["net.0.bias"].astype(np.float32),
    )
    w2, b2 = (
        dec["net.3.weight"].astype(np.float32),
        dec["net.3.bias"].astype(np.float32),
    )
    if w2.shape != (len(genes), w1.shape[0]) or b1.shape != (w1.shape[0],):
        return None
    w1t = np.ascontiguousarray(w1.T)

    def hidden(e: np.ndarray) -> np.ndarray:
        out = e @ w1t
        out += b1
        return np.maximum(out, 0.0, out=out)

    return ExpressionHead(
        genes,
        hidden,
        np.ascontiguousarray(w2.T),
        b2,
        "relu",
        name=f"SEAL decoder of {run.name}",
    )


def match_gene(genes: Sequence[str], text: str) -> str:
    """The panel gene a user typed, spelled as in ``genes`` (case does not matter).

    Raises
    ------
    GeneQueryError
        Empty text, or a name not in the panel (the message lists the nearest).
    """
    import difflib

    text = str(text).strip()
    if not text:
        msg = "type a gene first (e.g. ERBB2)"
        raise GeneQueryError(msg)
    by_upper = {str(g).upper(): str(g) for g in genes}
    if text.upper() in by_upper:
        return by_upper[text.upper()]
    near = difflib.get_close_matches(text.upper(), list(by_upper), n=3)
    hint = f"; nearest: {', '.join(by_upper[n] for n in near)}" if near else ""
    msg = f"{text!r} is not in this model's {len(by_upper)}-gene panel{hint}"
    raise GeneQueryError(msg)
