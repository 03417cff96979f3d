"""FAISS inner-product search over L2-normalised vectors, keyed by int64 ids.

:class:`VectorIndex` is exact (``IndexFlatIP`` in an ``IndexIDMap2``) while small and switches
to an approximate index (``index_factory`` string; IVF by default, whose lists are re-trained
when the collection has grown 4x) above ``ann_threshold`` vectors. The approximate index's
search breadth (IVF ``nprobe``, HNSW ``efSearch``) is tuned on every build until its measured
recall@10 against exact search reaches ``recall_target``. It keeps its own copy of the
vectors so it can rebuild at any time (switching kind, re-training, or deleting from an index
type that cannot delete, such as HNSW or a GPU index). GPU indexes are used when
``faiss.get_num_gpus() > 0`` unless ``use_gpu=False``. numpy in, numpy out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

#: vectors used to train IVF lists, per list (FAISS warns below 39).
TRAIN_PER_LIST = 64
#: stored vectors used as queries when tuning the search breadth, and the k of its recall.
TUNE_QUERIES = 200
TUNE_K = 10
_threads: int | None = None  # the OpenMP thread count set last


def configure_threads(threads: int | None = None) -> int:
    """Set FAISS's OpenMP thread count for the process (``faiss_threads``, setting
    ``SHELLID_FAISS_THREADS``, default 1); None keeps the current count (1 at first).

    Queries arrive one specimen at a time; on a small shared CPU, OpenMP's synchronisation
    makes a single 10^4-vector exact search take ~50 ms with 2 threads against ~0.7 ms with one
    (measured on the 2-core development machine under load). Batches still use BLAS threads.
    """
    global _threads
    wanted = max(1, int(threads if threads is not None else (_threads or 1)))
    if wanted != _threads:
        faiss.omp_set_num_threads(wanted)
        _threads = wanted
    return wanted


class IndexFile:
    """A FAISS index saved in a local file of its own: :meth:`VectorIndex.restore_state`
    memory-maps it; called as ``read(n)`` it streams the file like any other reader."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._file: Any = None

    def __call__(self, n: int) -> bytes:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed at the end of the file
        data: bytes = self._file.read(int(n))
        if not data:
            self._file.close()
        return data


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected vectors of size {dim}, got shape {array.shape}")
    return array


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: about 4 sqrt(n) as a power of two, between 16 and 65536,
    and at most n / 39 (the fewest training points per list FAISS accepts)."""
    nlist = int(2 ** round(math.log2(max(16, min(65536, 4 * math.sqrt(max(n, 1)))))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return nlist


def default_nprobe(nlist: int) -> int:
    """IVF lists probed per query: 1/16 of the lists, at least 32 (recall@10 >= 0.95 from
    10^4 to 10^6 clustered vectors, see benchmarks/search_benchmark.py)."""
    return min(nlist, max(32, nlist // 16))


class VectorIndex:
    """Top-k inner-product search with add / remove by id.

    ``ann_threshold``: vector count from which an approximate index is used; ``factory``:
    FAISS ``index_factory`` string for it (``None`` = ``IVF{nlist},Flat`` with
    :func:`default_nlist`); ``nprobe`` / ``ef_search``: search breadth of IVF / HNSW indexes;
    ``threads``: FAISS's OpenMP threads (:func:`configure_threads`).
    """

    def __init__(
        self,
        dim: int,
        *,
        ann_threshold: int = 100_000,
        factory: str | None = None,
        nprobe: int | None = None,
        ef_search: int = 64,
        recall_target: float = 0.95,
        use_gpu: bool | None = None,
        threads: int | None = None,
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        configure_threads(threads)
        self.dim = int(dim)
        self.ann_threshold = int(ann_threshold)
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.recall_target = recall_target
        self.measured_recall: float | None = 1.0
        self._breadth = 0
        self._nlist = 1
        self.use_gpu = (faiss.get_num_gpus() > 0) if use_gpu is None else bool(use_gpu)
        self._lock = threading.RLock()
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._index: faiss.Index | None = None
        self._kind = "flat"
        self._trained_size = 0
        self._gpu_resources: Any = None
        self._mapped = False  # the IVF lists are a read-only memory map of a snapshot file
        self._build()

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        return int(self._ids.size)

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or the factory string of the approximate index in use."""
        return self._kind

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    # ------------------------------------------------------------------ building
    def _wanted_kind(self, n: int) -> str:
        if n < self.ann_threshold:
            return "flat"
        return self.factory or f"IVF{default_nlist(n)},Flat"

    def _to_gpu(self, index: faiss.Index) -> faiss.Index:
        if not self.use_gpu:
            return index
        try:  # pragma: no cover - needs a GPU
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        except Exception:  # pragma: no cover - index type without GPU support: stay on CPU
            return index

    def _build(self) -> None:
        """(Re)build the FAISS index from the kept vectors."""
        n = self._ids.size
        kind = self._wanted_kind(n)
        index: faiss.Index
        if kind == "flat":
            index = faiss.IndexIDMap2(self._to_gpu(faiss.IndexFlatIP(self.dim)))
        else:
            base = faiss.index_factory(self.dim, kind, faiss.METRIC_INNER_PRODUCT)
            if not base.is_trained:
                nlist = getattr(faiss.extract_index_ivf(base), "nlist", 1) if "IVF" in kind else 1
                rng = np.random.default_rng(0)
                take = min(n, max(TRAIN_PER_LIST * nlist, 10_000))
                sample = (
                    self._vectors[rng.choice(n, size=take, replace=False)]
                    if take < n
                    else self._vectors
                )
                base.train(sample)
            if "IVF" in kind:
                self._nlist = int(faiss.extract_index_ivf(base).nlist)
            index = base if "IVF" in kind else faiss.IndexIDMap2(base)
            index = self._to_gpu(index)
        if n:
            index.add_with_ids(self._vectors, self._ids)
        self._index = index
        self._mapped = False
        self._kind = kind
        self._trained_size = n
        self._tune()

    # ------------------------------------------------------------------ search breadth
    def _breadth_name(self) -> str | None:
        if "IVF" in self._kind:
            return "nprobe"
        if "HNSW" in self._kind:
            return "efSearch"
        return None

    def _set_breadth(self, value: int) -> None:
        name = self._breadth_name()
        if name is None or self._index is None:
            return
        try:
            faiss.ParameterSpace().set_index_parameter(self._index, name, int(value))
        except RuntimeError:  # pragma: no cover - GPU index
            faiss.GpuParameterSpace().set_index_parameter(self._index, name, int(value))
        self._breadth = int(value)

    def _tune(self) -> None:
        """Choose the search breadth of an approximate index: the user's ``nprobe`` /
        ``ef_search`` when given, else the smallest doubling of the default whose recall@k,
        measured with up to :data:`TUNE_QUERIES` stored vectors as queries (themselves
        excluded) against exact search, reaches :attr:`recall_target`."""
        name = self._breadth_name()
        self.measured_recall = 1.0 if self._kind == "flat" else None
        if name is None:
            return
        n = self._ids.size
        if name == "nprobe":
            limit = self._nlist
            start, fixed = default_nprobe(limit), self.nprobe
        else:
            limit, start, fixed = 4096, self.ef_search, None
        value = fixed or start
        self._set_breadth(value)
        if n < 2:
            return
        rng = np.random.default_rng(1)
        rows = rng.choice(n, size=min(TUNE_QUERIES, n), replace=False)
        queries = self._vectors[rows]
        k = min(TUNE_K, n - 1)
        _, truth = self.search_exact(queries, k + 1)
        index = self._index
        assert index is not None  # tuning runs right after the index is built
        while True:
            _, found = index.search(queries, k + 1)
            recall = float(
                np.mean(
                    [
                        len((set(f) - {own}) & (set(t) - {own})) / k
                        for f, t, own in zip(found, truth, self._ids[rows], strict=True)
                    ]
                )
            )
            if fixed or recall >= self.recall_target or value >= limit:
                break
            value = min(limit, value * 2)
            self._set_breadth(value)
        self.measured_recall = recall

    @property
    def search_breadth(self) -> dict[str, int]:
        """``{"nprobe": ...}`` or ``{"efSearch": ...}`` in use (empty for exact search)."""
        name = self._breadth_name()
        return {name: self._breadth} if name else {}

    def _needs_rebuild(self) -> bool:
        n = self._ids.size
        if self._kind == "flat":
            return n >= self.ann_threshold
        if 2 * n < self.ann_threshold:  # hysteresis: back to exact well below the threshold
            return True
        # approximate: re-train the lists when the collection grew or shrank 4x since training
        return n > 4 * self._trained_size or 4 * n < self._trained_size

    def set_nprobe(self, nprobe: int) -> None:
        """Fix the IVF lists probed per query (kept through rebuilds; no auto-tuning)."""
        with self._lock:
            self.nprobe = int(nprobe)
            if "IVF" in self._kind:
                self._set_breadth(self.nprobe)

    # ------------------------------------------------------------------ updates
    def add(self, vectors: np.ndarray, ids: np.ndarray, *, kept: np.ndarray | None = None) -> None:
        """Add vectors under new int64 ids (an id already present raises ValueError).
        ``kept``: the caller's array of every vector after the addition (the old ones, then
        these), kept as the index's copy instead of a concatenation of its own (one O(n d)
        copy and n d floats of memory fewer; it must not be written to afterwards)."""
        vectors = _as_matrix(vectors, self.dim)
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {ids.size} ids")
        if ids.size == 0:
            return
        with self._lock:
            increasing = bool(np.all(ids[1:] > ids[:-1])) and (
                self._ids.size == 0 or ids[0] > self._ids[-1]
            )  # ids handed out in order (EnrolledRows' keys): no O(n) membership test
            if not increasing and (
                np.unique(ids).size != ids.size or np.isin(ids, self._ids).any()
            ):
                raise ValueError("ids must be new and unique")
            total = self._ids.size + ids.size
            if kept is not None and kept.shape == (total, self.dim) and kept.dtype == np.float32:
                self._vectors = kept
            else:
                self._vectors = np.concatenate([self._vectors, vectors])
            self._ids = np.concatenate([self._ids, ids])
            if self._needs_rebuild():
                self._build()
            else:
                assert self._index is not None
                self._own()
                self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray, *, kept: np.ndarray | None = None) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed. ``kept``: the
        caller's array of the remaining vectors in order, kept as the index's copy (see
        :meth:`add`)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        with self._lock:
            keep = ~np.isin(self._ids, ids)
            removed = int(self._ids.size - keep.sum())
            if not removed:
                return 0
            rest = int(keep.sum())
            if kept is not None and kept.shape == (rest, self.dim) and kept.dtype == np.float32:
                self._vectors = kept
            else:
                self._vectors = self._vectors[keep]
            self._ids = self._ids[keep]
            if self._needs_rebuild():
                self._build()
                return removed
            assert self._index is not None
            self._own()
            try:
                done = self._index.remove_ids(faiss.IDSelectorBatch(ids))
            except RuntimeError:  # HNSW, GPU indexes: cannot delete in place
                done = -1
            if done != removed:
                self._build()
            return removed

    def reset(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Replace the whole content."""
        vectors = (
            _as_matrix(vectors, self.dim) if len(vectors) else np.zeros((0, self.dim), np.float32)
        )
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size != vectors.shape[0] or np.unique(ids).size != ids.size:
            raise ValueError("need one unique id per vector")
        with self._lock:
            self._vectors = vectors.copy()
            self._ids = ids.copy()
            self._build()

    @property
    def mapped(self) -> bool:
        """Whether the index's lists are read from a memory-mapped file (until the first
        change, which copies them: :meth:`restore_state`)."""
        return self._mapped

    def _own(self) -> None:
        """Copy memory-mapped IVF lists into memory before a change (FAISS aborts the process
        on a write to a mapped list): one pass over the lists, then a normal index."""
        if not self._mapped or self._index is None:
            return
        ivf = faiss.extract_index_ivf(self._index)
        mapped = ivf.invlists
        assert mapped is not None
        lists = faiss.ArrayInvertedLists(mapped.nlist, mapped.code_size)
        for number in range(mapped.nlist):
            size = mapped.list_size(number)
            if size:
                lists.add_entries(number, size, mapped.get_ids(number), mapped.get_codes(number))
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # type: ignore[attr-defined]  # owned by the index now
        self._mapped = False

    # ------------------------------------------------------------------ persistence
    def export_state(self) -> dict[str, Any]:
        """What :meth:`restore_state` needs besides the vectors and ids: the kind, training
        size and search breadth (JSON-able)."""
        with self._lock:
            return {
                "kind": self._kind,
                "trained_size": self._trained_size,
                "nlist": self._nlist,
                "breadth": self._breadth,
                "measured_recall": self.measured_recall,
                "count": int(self._ids.size),
            }

    def write_index(self, write: Callable[[bytes], Any]) -> bool:
        """Stream the FAISS index (``faiss.write_index``) to ``write``; False, writing
        nothing, for an exact index (rebuilt from the vectors in well under a second)."""
        with self._lock:
            if self._kind == "flat" or self._index is None:
                return False
            index = self._index
            if self.use_gpu:  # pragma: no cover - needs a GPU
                index = faiss.index_gpu_to_cpu(index)
            writer = faiss.PyCallbackIOWriter(write)  # type: ignore[attr-defined]
            faiss.write_index(index, writer)
            del writer  # flushes
            return True

    def restore_state(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        state: dict[str, Any],
        read: Callable[[int], bytes] | IndexFile | str | None = None,
    ) -> None:
        """Take over a saved index: ``vectors`` / ``ids`` as kept, ``state`` from
        :meth:`export_state` and, for an approximate index, ``read`` streaming what
        :meth:`write_index` wrote, or the path of a local file holding it (no training, no
        tuning). ``vectors`` is kept as is (not copied; it is never written to). An IVF index
        from a file is memory-mapped (``IO_FLAG_MMAP_IFC``: nothing read until a query probes
        a list; the file must not be overwritten in place meanwhile) and copied into memory at
        the first change (:meth:`_own`). Raises ValueError when the parts do not fit."""
        vectors = np.asarray(vectors, np.float32)
        ids = np.asarray(ids, np.int64).ravel()
        kind = str(state["kind"])
        if vectors.shape != (ids.size, self.dim) or int(state["count"]) != ids.size:
            raise ValueError("saved search index: vectors, ids and count do not fit")
        with self._lock:
            self._vectors, self._ids = vectors, ids
            if kind == "flat":
                self._kind, self._trained_size = "flat", ids.size
                self._build()
                return
            if read is None:
                raise ValueError("saved search index: the FAISS index is missing")
            path = read.path if isinstance(read, IndexFile) else read
            mapped = isinstance(path, str) and "IVF" in kind and not self.use_gpu
            if isinstance(path, str):
                index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if mapped else 0)
            else:
                reader = faiss.PyCallbackIOReader(read, 1 << 22)  # type: ignore[attr-defined]
                index = faiss.read_index(reader)
            if index.ntotal != ids.size or index.d != self.dim:
                raise ValueError("saved search index: the FAISS index does not hold these vectors")
            self._index = self._to_gpu(index)
            self._mapped = mapped
            self._kind = kind
            self._trained_size = int(state["trained_size"])
            self._nlist = int(state["nlist"])
            recall = state.get("measured_recall")
            self.measured_recall = None if recall is None else float(recall)
            if self.nprobe is not None and "IVF" in kind:
                self._set_breadth(self.nprobe)
            else:
                self._set_breadth(int(state["breadth"]))

    # ------------------------------------------------------------------ queries
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores (m, k) float32, ids (m, k) int64)``; rows are
        padded with score ``-inf`` and id ``-1`` when fewer than ``k`` vectors exist."""
        queries = _as_matrix(queries, self.dim)
        k = int(k)
        if k <= 0:
            raise ValueError("k must be positive")
        m = queries.shape[0]
        with self._lock:
            n = self._ids.size
            if n == 0 or m == 0:
                return (np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64))
            assert self._index is not None
            kk = min(k, n)
            scores, ids = self._index.search(queries, kk)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        if kk < k:
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        return scores, ids.astype(np.int64)

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-``k`` over the kept vectors (ground truth for recall checks)."""
        queries = _as_matrix(queries, self.dim)
        with self._lock:
            vectors, ids = self._vectors, self._ids
        flat = faiss.IndexFlatIP(self.dim)
        if ids.size:
            flat.add(vectors)
        kk = max(1, min(k, ids.size))
        scores, rows = flat.search(queries, kk)
        out_ids = np.where(rows >= 0, ids[np.clip(rows, 0, None)] if ids.size else -1, -1)
        scores = scores.astype(np.float32)
        scores[rows < 0] = -np.inf
        if kk < k:
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            out_ids = np.pad(out_ids, ((0, 0), (0, k - kk)), constant_values=-1)
        return scores, out_ids.astype(np.int64)
