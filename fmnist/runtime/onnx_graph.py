"""Which graph an exported ``model.onnx`` holds, and from which weights: a SHA-256 over the
whole model except its metadata, together with the SHA-256 of the model file it was
exported from. Export writes it into the metadata (``fmnist_graph_sha256``); before the file
is used it is recomputed from the graph as it is and the model file beside it.

The metadata's own ``fmnist_source_sha256`` (the model file's SHA-256) proves nothing about
the graph: another run's graph with this run's metadata copied over it would pass. The
graph's hash, taken over the graph and the weights' hash at once, fails for another run's
graph whichever of the two fields is copied. One function computes it for export and for
the check, so the two can never disagree on what is hashed. (Anyone who can write the run
folder can still recompute it: this catches swaps and copies, it is no signature.)
"""

from __future__ import annotations

import hashlib
import os

from fmnist.core.errors import FmnistError

GRAPH_HASH_KEY = "fmnist_graph_sha256"


def graph_sha256(proto, source_sha256: str) -> str:
    """SHA-256 of ``source_sha256`` (the model file's) and of an ``onnx.ModelProto`` without
    its metadata and description: the graph, its weights (initializers), functions, opsets
    and producer, serialized deterministically."""
    bare = type(proto)()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    bare.ClearField("doc_string")
    h = hashlib.sha256(source_sha256.encode("ascii") + b"\0")
    h.update(bare.SerializeToString(deterministic=True))
    return h.hexdigest()


def read_onnx(raw: bytes, name: str | os.PathLike):
    """The ``onnx.ModelProto`` in ``raw`` and its metadata as a dict."""
    try:
        import onnx  # optional: `fmnist[onnx]` installs it with onnxruntime
    except ImportError:
        raise FmnistError(f"{name}: checking an ONNX file needs the onnx package: pip install 'fmnist[onnx]'") from None
    try:
        proto = onnx.load_from_string(raw)
    except Exception as e:  # protobuf's DecodeError, or onnx's own for a bad model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:150]
        raise FmnistError(f"{name}: not a readable ONNX model ({first}); re-run `fmnist export`") from None
    return proto, {p.key: p.value for p in proto.metadata_props}
