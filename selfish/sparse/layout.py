"""Gate layouts: how the rows (dim 0) of a weight tensor split into named gate blocks (contracts.md).

``nn.LSTM`` weights stack (i, f, g, o), ``nn.GRU`` weights (r, z, n); a module may declare its own with
``gate_layout() -> {param name relative to the module: int | [(gate, rows), ...]}``; the explicit
``Masking(gate_layout=...)`` argument overrides both. Anything else is one block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["GateBlock", "LayoutSpec", "default_gate_names", "resolve_blocks", "discover_layouts"]

LayoutSpec = int | Sequence[tuple[str, int]]

_DEFAULT_NAMES = {4: ["i", "f", "g", "o"], 3: ["r", "z", "n"], 2: ["H", "T"]}
_RNN_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.LSTMCell: 4, nn.GRUCell: 3}
_RNN_WEIGHT = re.compile(r"^weight_(ih|hh)(_l\d+(_reverse)?)?$")


@dataclass(frozen=True)
class GateBlock:
    """Rows ``[start, stop)`` of a tensor belonging to gate ``name``."""

    name: str
    start: int
    stop: int


def default_gate_names(k: int) -> list[str]:
    """4 -> i f g o, 3 -> r z n, 2 -> H T, else "0".."k-1"."""
    return list(_DEFAULT_NAMES.get(k, [str(i) for i in range(k)]))


def resolve_blocks(name: str, rows: int, spec: LayoutSpec | None) -> list[GateBlock]:
    """Turn a layout spec into row blocks for a tensor with ``rows`` rows; validates the sizes."""
    if spec is None or (isinstance(spec, int) and spec == 1):
        return [GateBlock("0", 0, rows)]
    if isinstance(spec, int):
        if spec < 1 or rows % spec:
            raise ValueError(f"gate layout of {name!r}: {rows} rows do not split into {spec} equal blocks")
        size = rows // spec
        return [GateBlock(g, i * size, (i + 1) * size) for i, g in enumerate(default_gate_names(spec))]
    blocks, start = [], 0
    for gate, n in spec:
        if int(n) <= 0:
            raise ValueError(f"gate layout of {name!r}: gate {gate!r} has {n} rows")
        blocks.append(GateBlock(str(gate), start, start + int(n)))
        start += int(n)
    if start != rows:
        raise ValueError(f"gate layout of {name!r}: blocks cover {start} rows, the tensor has {rows}")
    if len({b.name for b in blocks}) != len(blocks):
        raise ValueError(f"gate layout of {name!r}: duplicate gate names")
    return blocks


def discover_layouts(model: nn.Module, names_by_id: Mapping[int, str]) -> dict[str, LayoutSpec]:
    """Layout specs found on the modules of ``model``, keyed by fully qualified parameter name.

    ``names_by_id`` maps ``id(parameter)`` to the name masks use (first name of tied weights).
    ``gate_layout()`` returns ``{param name relative to the module: spec}``, or a bare spec (int or
    block list) for all of the module's own 2-D+ weights. A module's declaration wins over the
    nn.LSTM/nn.GRU defaults; outer modules win over inner.
    """
    found: dict[str, LayoutSpec] = {}
    for _prefix, module in model.named_modules():
        declared = getattr(module, "gate_layout", None)
        if not callable(declared):
            continue
        layout = declared()
        if isinstance(layout, Mapping):
            pairs = [(_lookup(module, local), spec) for local, spec in layout.items()]
        else:  # an int or a block list: applies to the module's own weights
            pairs = [(p, layout) for p in module.parameters(recurse=False) if p.dim() >= 2]
        for param, spec in pairs:
            if param is not None and id(param) in names_by_id:
                found.setdefault(names_by_id[id(param)], spec)
    for _prefix, module in model.named_modules():
        gates = next((k for cls, k in _RNN_GATES.items() if isinstance(module, cls)), None)
        if gates is None:
            continue
        for local, param in module.named_parameters(recurse=False):
            if _RNN_WEIGHT.match(local) and id(param) in names_by_id:
                found.setdefault(names_by_id[id(param)], gates)
    return found


def _lookup(module: nn.Module, local: str) -> nn.Parameter | None:
    try:
        return module.get_parameter(local)
    except AttributeError:
        return None
