"""OUT/report.html: one self-contained file (plotly.js inside, gzipped; no network), offline.

Everything the data controls is escaped once, in Python: metadata text goes through
``html.escape`` (plotly renders text as pseudo-HTML and decodes the entities for display), and
the data blob is JSON inside a ``<script type="application/json">`` with ``<``, ``>`` and ``&``
written as ``\\u003c``-style escapes, so no value can close the script element. Track ids in
the player are set with ``textContent`` (raw text, never parsed as markup) and its audio links
are percent-encoded relative URLs (see :mod:`soundclust_ray.report.player`).
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from soundclust_ray import outdir
from soundclust_ray.audio.probe import HEADER_COLUMNS
from soundclust_ray.config import AnalysisConfig
from soundclust_ray.report.bundle import BUNDLE_MEDIA_TYPE, plotly_gzip_base64
from soundclust_ray.report.player import audio_links, nearest_in_matrix, nearest_on_map

_CFG = AnalysisConfig()
NOISE_COLOR = "#7f7f7f"
"""HDBSCAN noise is medium grey (seed 002)."""
MAP_COLUMNS = ("kmeans", "hdbscan", "umap_x", "umap_y", "pca_x", "pca_y", "top_tags")
HOVER_SKIP = {"path"}
MAX_HOVER_FIELDS = 8


def _palette() -> list[str]:
    from plotly.colors import qualitative

    return list(qualitative.Dark24) + list(qualitative.Light24)


def esc(value: object) -> str:
    """HTML-escaped text of any value (None and NaN become an empty string).

    Quotes become numeric references (``&#34;``, ``&#x27;``): plotly decodes those in its SVG
    text but shows ``&quot;`` literally.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True).replace("&quot;", "&#34;")


def script_json(obj: object) -> str:
    """JSON that is safe inside a <script> element: no '<', '>', '&' or line separators."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, rep)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _num(v: object) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: object, digits: int = 3) -> str:
    f = _num(v) if not isinstance(v, str) else None
    if f is None:
        return esc(v) if v is not None else "–"
    if float(f).is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:.{digits}g}" if abs(f) < 1e-3 or abs(f) >= 1e5 else f"{f:.{digits}f}"


def _sample_rows(n: int, limit: int, random_state: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, size=limit, replace=False))


def _colorings(df: pd.DataFrame, label_col: str | None, max_categories: int) -> dict[str, dict]:
    """Name → {title, categories (escaped), codes, colors} for every way to colour the maps."""
    palette = _palette()
    out: dict[str, dict] = {}

    def add(key: str, title: str, values: pd.Series, noise: object = None) -> None:
        s = values.astype(object).where(values.notna(), None)
        cats = sorted({v for v in s if v is not None}, key=lambda v: (str(type(v)), v))
        if noise is not None and noise in cats:
            cats.remove(noise)
            cats.append(noise)
        index = {c: i for i, c in enumerate(cats)}
        codes = [index.get(v, -1) for v in s]
        names, colors = [], []
        for i, c in enumerate(cats):
            if noise is not None and c == noise:
                names.append("noise (-1)")
                colors.append(NOISE_COLOR)
            else:
                names.append(esc(c))
                colors.append(palette[i % len(palette)])
        if (np.asarray(codes) < 0).any():
            names.append("(missing)")
            colors.append("#c8c8c8")
            codes = [c if c >= 0 else len(cats) for c in codes]
        out[key] = {"title": esc(title), "categories": names, "codes": codes, "colors": colors}

    if "kmeans" in df:
        add("kmeans", "k-means cluster", df["kmeans"].astype(int))
    if "hdbscan" in df:
        add("hdbscan", "HDBSCAN cluster", df["hdbscan"].astype(int), noise=-1)
    candidates = [label_col] if label_col and label_col in df else []
    for col in df.columns:
        if col in MAP_COLUMNS or col in ("track_id", "path") or col in candidates:
            continue
        s = df[col]
        if pd.api.types.is_float_dtype(s):
            continue
        if 1 < s.nunique(dropna=True) <= max_categories:
            candidates.append(col)
    for col in candidates:
        add(f"meta:{col}", col, df[col])
    return out


def _meta_columns(df: pd.DataFrame, skip: set[str] = HOVER_SKIP) -> list[str]:
    """The metadata columns a track's hover (or a duplicate pair) shows: the first
    ``MAX_HOVER_FIELDS``, and the header facts (duration, sample rate, channels) always."""
    meta = [c for c in df.columns if c not in MAP_COLUMNS and c not in skip and c != "track_id"]
    shown = meta[:MAX_HOVER_FIELDS]
    return shown + [c for c in HEADER_COLUMNS if c in meta and c not in shown]


def _hover_texts(df: pd.DataFrame) -> list[str]:
    meta_cols = _meta_columns(df)
    has_tags = "top_tags" in df
    texts = []
    for row in df.itertuples(index=False, name=None):
        # Plain tuples zipped with the column names: named tuples rename a column such as
        # "release year" or "genre/sub" to _3, and its values would vanish from the hover.
        r = dict(zip(df.columns, row, strict=True))
        parts = [f"<b>{esc(r.get('track_id'))}</b>"]
        for c in meta_cols:
            parts.append(f"{esc(c)}: {esc(r.get(c))}")
        parts.append(f"k-means {esc(r.get('kmeans'))} · HDBSCAN {esc(r.get('hdbscan'))}")
        if has_tags and r.get("top_tags"):
            parts.append(f"tags: {esc(r.get('top_tags'))}")
        texts.append("<br>".join(parts))
    return texts


def _coords(df: pd.DataFrame, x: str, y: str) -> tuple[list, list] | None:
    if x not in df or y not in df:
        return None
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    if not np.isfinite(xs).any():
        return None
    r = 5
    return (
        [round(v, r) if math.isfinite(v) else None for v in xs.tolist()],
        [round(v, r) if math.isfinite(v) else None for v in ys.tolist()],
    )


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_table(entries: list[dict]) -> str:
    if not entries:
        return "<p class=muted>No clusters.</p>"
    rows = []
    for e in entries:
        name = "noise (-1)" if e.get("cluster") == -1 else esc(e.get("cluster"))
        tops = "<br>".join(
            f"<b>{esc(col)}</b>: " + ", ".join(f"{esc(v)} ({_fmt(n)})" for v, n in vals)
            for col, vals in (e.get("top_values") or {}).items()
            if vals
        )
        means = "<br>".join(
            f"{esc(col)}: {_fmt(v)}{_range_text(e, col)}"
            for col, v in (e.get("numeric_means") or {}).items()
        )
        near = "<br>".join(esc(t.get("track_id")) for t in e.get("nearest_tracks") or [])
        tags = ", ".join(
            f"{esc(t['tag'])} ({_fmt(t['mean'], 2)}, z {_fmt(t['z'], 1)})"
            for t in e.get("distinctive_tags") or []
        ) or ", ".join(f"{esc(t)} ({_fmt(p, 2)})" for t, p in e.get("top_tags") or [])
        rows.append([name, _fmt(e.get("size")), tops, means, near, tags])
    headers = ["cluster", "tracks", "top values", "numeric mean (min–max)", "nearest the centre"]
    headers.append("tags")
    if not any(r[5] for r in rows):
        headers, rows = headers[:5], [r[:5] for r in rows]
    return _table(headers, rows, "summary")


def _range_text(entry: dict, col: str) -> str:
    """`` (min–max)`` of a numeric column in a summary entry, "" when it has none."""
    low = (entry.get("numeric_min") or {}).get(col)
    high = (entry.get("numeric_max") or {}).get(col)
    return "" if low is None or high is None else f" ({_fmt(low)}–{_fmt(high)})"


def _noise_html(summaries: dict, metrics: dict) -> str:
    """HDBSCAN's noise rows, apart from its clusters (they are no cluster); the reason instead
    when HDBSCAN was skipped (every row is -1 then), nothing for summaries written before."""
    if "hdbscan_noise" not in summaries:
        return ""
    skipped = (metrics.get("hdbscan") or {}).get("skipped")
    if skipped:
        return f"<p class=muted>HDBSCAN skipped: {esc(skipped)}.</p>"
    noise = summaries["hdbscan_noise"]
    if not noise:
        return "<p class=muted>No noise: HDBSCAN put every track in a cluster.</p>"
    return (
        f"<h3>Noise (-1), not a cluster: {_fmt(noise.get('size'))} tracks</h3>"
        f"{_summary_table([noise])}"
    )


def _pair_side(row: pd.Series | None, columns: list[str]) -> str:
    """One track of a pair: its metadata fields, escaped ("" for a track not in clusters)."""
    if row is None:
        return ""
    return "<br>".join(f"{esc(c)}: {esc(row[c])}" for c in columns if esc(row[c]) != "")


def duplicates_html(
    info: dict | None, pairs: pd.DataFrame | None, clusters: pd.DataFrame, limit: int
) -> str:
    """The near-duplicates section: count and threshold from metrics.json's ``duplicates``,
    then the ``limit`` closest pairs of OUT/duplicates.parquet with both tracks' metadata; a
    line when the step was skipped or found nothing."""
    head = "<section><h2>Near-duplicates</h2>"
    info = info or {}
    if "threshold" not in info:
        reason = info.get("skipped") or "not computed for this analysis"
        return f"{head}<p class=muted>Near-duplicate search skipped: {esc(reason)}.</p></section>"
    n_pairs, threshold = int(info.get("n_pairs") or 0), _fmt(info["threshold"])
    where = f"cosine ≥ {threshold} in the search geometry ({esc(info.get('matrix', ''))})"
    if not n_pairs or pairs is None or pairs.empty:
        return f"{head}<p>No pair of tracks at {where}.</p></section>"
    top = pairs.sort_values("cosine", ascending=False, kind="stable").head(limit)
    rows_by_id = clusters.drop_duplicates("track_id").set_index("track_id", drop=False)
    columns = [c for c in ("path", *_meta_columns(clusters)) if c in clusters]
    columns = [c for c in columns if clusters[c].nunique(dropna=True) > 1][:5]
    rows = []
    for a, b, cos in top[["track_id_a", "track_id_b", "cosine"]].itertuples(index=False):
        sides = [rows_by_id.loc[t] if t in rows_by_id.index else None for t in (a, b)]
        rows.append(
            [f"{float(cos):.4f}", esc(a), _pair_side(sides[0], columns), esc(b)]
            + [_pair_side(sides[1], columns)]
        )
    shown = f"; the {len(top):,} closest" if len(top) < n_pairs else ""
    text = (
        f"<p>{n_pairs:,} pairs ({_fmt(info.get('n_tracks'))} tracks) at {where}{shown}; all in "
        f"OUT/{outdir.DUPLICATES}.</p>"
    )
    table = _table(["cosine", "track", "its metadata", "duplicate", "its metadata"], rows)
    return f"{head}{text}{table}</section>"


def _read_errors(out: str) -> pd.DataFrame | None:
    table = outdir.read_table(out, outdir.ERRORS)
    return None if table is None else table.to_pandas()


def _failures_html(metrics: dict, errors: pd.DataFrame | None) -> str:
    n_failed = metrics.get("n_failed") or 0
    if not n_failed or errors is None or errors.empty:
        return f"<p>{_fmt(n_failed)} failed track rows.</p>"
    cols = [c for c in ("stage", "error_type") if c in errors]
    parts = [f"<p>{_fmt(n_failed)} failed track rows (OUT/{outdir.ERRORS}).</p>"]
    if cols:
        counts = errors.groupby(cols).size().reset_index(name="n").sort_values("n", ascending=False)
        parts.append(
            _table(
                [esc(c) for c in cols] + ["tracks"],
                [[esc(v) for v in r[:-1]] + [_fmt(r[-1])] for r in counts.itertuples(index=False)],
            )
        )
    shown = errors.head(20)
    show_cols = [c for c in ("track_id", "stage", "error_type", "message") if c in shown]
    parts.append("<details><summary>first failures</summary>")
    parts.append(
        _table(
            [esc(c) for c in show_cols],
            [[esc(v) for v in r] for r in shown[show_cols].itertuples(index=False)],
        )
    )
    parts.append("</details>")
    return "".join(parts)


def _sanity_data(metrics: dict) -> dict | None:
    s = metrics.get("embedding_sanity")
    if not isinstance(s, dict) or "before" not in s or "after" not in s:
        return None
    return {
        "labels": ["raw", "centered + L2"],
        "mean": [
            _num(s["before"].get("mean_pairwise_cosine")),
            _num(s["after"].get("mean_pairwise_cosine")),
        ],
        "std": [
            _num(s["before"].get("std_pairwise_cosine")),
            _num(s["after"].get("std_pairwise_cosine")),
        ],
    }


def _sanity_table(metrics: dict) -> str:
    s = metrics.get("embedding_sanity")
    if not isinstance(s, dict) or "before" not in s:
        return ""
    keys = [k for k in s["before"] if k in s.get("after", {})]
    rows = [[esc(k), _fmt(s["before"][k]), _fmt(s["after"][k])] for k in keys]
    return _table(["", "raw", "centered + L2"], rows)


PROJECTIONS = (
    ("umap", "UMAP", "umap_x", "umap_y", "UMAP-1", "UMAP-2", "umap"),
    ("pca", "PCA", "pca_x", "pca_y", "PC1", "PC2", "pca_map"),
)
"""Map id, title, x/y columns, axis titles, and the metrics key that says why one is missing."""


def _projections(df: pd.DataFrame, metrics: dict) -> list[dict]:
    out = []
    for key, title, x, y, xl, yl, metrics_key in PROJECTIONS:
        xy = _coords(df, x, y)
        reason = (metrics.get(metrics_key) or {}).get("skipped")
        out.append(
            {
                "id": key,
                "title": title,
                "x": xy[0] if xy else None,
                "y": xy[1] if xy else None,
                "xlabel": xl,
                "ylabel": yl,
                "reason": esc(reason or "no coordinates"),
            }
        )
    return out


def _neighbours(df: pd.DataFrame, matrix: np.ndarray | None, n: int) -> dict:
    """Each drawn point's nearest drawn points: in the clustering matrix when the driver passes
    it, otherwise on the UMAP map (the PCA map when UMAP was skipped)."""
    if matrix is not None:
        rows, dists = nearest_in_matrix(matrix, n)
        return {"space": "cosine distance in the clustered matrix", "rows": rows, "dist": dists}
    for _, title, x, y, *_ in PROJECTIONS:
        if x in df and y in df and np.isfinite(df[[x, y]].to_numpy(dtype=float)).any():
            rows, dists = nearest_on_map(df[[x, y]].to_numpy(dtype=float), n)
            return {"space": f"distance on the {title} map", "rows": rows, "dist": dists}
    return {"space": "", "rows": [[] for _ in range(len(df))], "dist": [[] for _ in range(len(df))]}


def _player_data(df: pd.DataFrame, out: str | None, matrix: np.ndarray | None, n: int) -> dict:
    """Track ids (raw text: the page sets them with textContent), relative audio links and
    neighbours of every drawn point."""
    paths = df["path"].tolist() if "path" in df else [None] * len(df)
    links = audio_links(paths, out) if out is not None else [None] * len(df)
    return {
        "names": df["track_id"].astype(str).tolist() if "track_id" in df else [],
        "audio": links,
        "neighbours": _neighbours(df, matrix, n),
    }


def _chart_data(metrics: dict) -> dict:
    curve = (metrics.get("k_selection") or {}).get("curve") or []
    timings = metrics.get("seconds_per_stage") or {}
    contingency = metrics.get("contingency")
    return {
        "k_curve": {
            "k": [c.get("k") for c in curve],
            "silhouette": [_num(c.get("silhouette")) for c in curve],
            "inertia": [_num(c.get("inertia")) for c in curve],
            "best": (metrics.get("k_selection") or {}).get("best"),
        }
        if curve
        else None,
        "sizes": {
            name: {"clusters": [esc(k) for k in sizes], "counts": list(sizes.values())}
            for name, sizes in (metrics.get("cluster_sizes") or {}).items()
        },
        "contingency": {
            "labels": [esc(v) for v in contingency["labels"]],
            "clusters": [esc(v) for v in contingency["clusters"]],
            "counts": contingency["counts"],
        }
        if contingency
        else None,
        "sanity": _sanity_data(metrics),
        "timings": {
            "stages": [esc(k) for k in timings],
            "seconds": [_num(v) for v in timings.values()],
        },
    }


SCORE_KEYS = (
    ("n_tracks", "tracks clustered"),
    ("n_windows", "windows clustered"),
    ("n_failed", "failed track rows"),
    ("k", "k (k-means)"),
    ("silhouette", "silhouette (k-means)"),
    ("davies_bouldin", "Davies–Bouldin (k-means)"),
    ("calinski_harabasz", "Calinski–Harabasz (k-means)"),
    ("n_hdbscan_clusters", "HDBSCAN clusters"),
    ("noise_fraction", "HDBSCAN noise fraction"),
    ("nmi", "NMI vs {label}"),
    ("ari", "ARI vs {label}"),
    ("homogeneity", "homogeneity"),
    ("completeness", "completeness"),
)


def _score_rows(metrics: dict) -> list[list[str]]:
    label_col = metrics.get("label_col")
    rows = [
        [esc(label.format(label=label_col)), _fmt(metrics[key])]
        for key, label in SCORE_KEYS
        if key in metrics
    ]
    hm = metrics.get("hdbscan_metrics") or {}
    if hm.get("silhouette") is not None:
        rows.append(["silhouette (HDBSCAN, non-noise)", _fmt(hm["silhouette"])])
    lm = (metrics.get("label_metrics") or {}).get("hdbscan") or {}
    if lm.get("nmi") is not None:
        rows.append(
            [esc(f"NMI / ARI of HDBSCAN vs {label_col}"), f"{_fmt(lm['nmi'])} / {_fmt(lm['ari'])}"]
        )
    return rows


def _notes_html(metrics: dict) -> str:
    hm = metrics.get("hdbscan_metrics") or {}
    skipped = [
        f"{esc(step)}: {esc(info.get('skipped'))}"
        for step, info in metrics.items()
        if isinstance(info, dict) and info.get("skipped")
    ]
    reasons = [
        f"{esc(name)}: {esc(m.get('reason'))}"
        for name, m in (("k-means scores", metrics.get("kmeans_metrics")), ("HDBSCAN scores", hm))
        if isinstance(m, dict) and m.get("reason")
    ]
    warning = (metrics.get("hdbscan") or {}).get("warning")
    warnings = [f"<b>HDBSCAN:</b> {esc(warning)}"] if warning else []
    items = warnings + [esc(n) for n in metrics.get("notes") or []] + skipped + reasons
    return "<h3>Notes</h3><ul>" + "".join(f"<li>{t}</li>" for t in items) + "</ul>" if items else ""


def _run_section(metrics: dict, run: dict, errors: pd.DataFrame | None) -> str:
    inputs = run.get("inputs") or run.get("input")
    rows = []
    if inputs is not None:
        rows.append(["inputs", esc(json.dumps(inputs, default=str))])
    for key in ("counts", "config_hash", "started", "finished", "ray_address", "nodes"):
        if key in run:
            rows.append([esc(key), esc(json.dumps(run[key], default=str))])
    matrix = metrics.get("matrix") or {}
    rows += [[esc(k), esc(v)] for k, v in matrix.items() if k != "notes"]
    config_text = json.dumps(
        {"analysis": metrics.get("config"), "run": run.get("config")}, indent=2, default=str
    )
    return f"""<section class=cols><div><h2>Run</h2>{_table(["", ""], rows)}
<h3>Failures</h3>{_failures_html(metrics, errors)}
{_notes_html(metrics)}
<details><summary>configuration</summary><pre>{esc(config_text)}</pre></details></div>
<div><h2>Time per stage</h2><div id=fig-timings class=fig></div></div></section>"""


def _maps_section(n_drawn: int, n_all: int, neighbours_space: str) -> str:
    sample_note = (
        f"<p class=muted>Maps show a seeded sample of {n_drawn:,} of {n_all:,} tracks.</p>"
        if n_drawn < n_all
        else ""
    )
    return f"""<section><h2>Maps</h2>
<div class=controls><label for=colorby>colour by</label> <select id=colorby></select></div>
{sample_note}<div class=maps><div id=map-umap class=map></div><div id=map-pca class=map></div></div>
<div id=player-panel><p class=muted id=player-hint>Click a point to listen to its track; its
nearest neighbours ({esc(neighbours_space)}) are listed to explore by ear.</p>
<div id=player hidden><p id=now-playing></p><audio id=audio controls preload=none></audio>
<p id=audio-status class=muted></p><ol id=neighbours></ol></div></div>
</section>"""


def _sections(metrics, summaries, data, run, errors, n_all, duplicates) -> list[str]:
    label_col = metrics.get("label_col")
    sections = [
        _maps_section(data["n_points"], n_all, data["player"]["neighbours"]["space"]),
        f"""<section class=cols><div><h2>Scores</h2>{_table(["", "value"], _score_rows(metrics))}
</div><div><h2>Cluster sizes</h2><div id=fig-sizes class=fig></div></div></section>""",
    ]
    if data["k_curve"]:
        sections.append(
            "<section><h2>k selection</h2><p class=muted>Silhouette of k-means on a seeded "
            "sample for each k; the best k was used.</p>"
            "<div id=fig-kcurve class=fig></div></section>"
        )
    if data["contingency"]:
        sections.append(
            f"<section><h2>k-means clusters vs {esc(label_col)}</h2><p class=muted>Tracks per "
            "label (row) and cluster (column).</p><div id=fig-contingency></div></section>"
        )
    for name, heading in (("kmeans", "k-means"), ("hdbscan", "HDBSCAN")):
        if name in summaries:
            noise = _noise_html(summaries, metrics) if name == "hdbscan" else ""
            sections.append(
                f"<section><h2>{heading} cluster summaries</h2>"
                f"{_summary_table(summaries[name])}{noise}</section>"
            )
    sections.append(duplicates)
    if data["sanity"]:
        sections.append(
            f"""<section class=cols><div><h2>Embedding sanity</h2>
<p class=muted>Mean pairwise cosine (± std) before and after centering + L2 normalization
(seed 000); a narrow cone (high cosine) makes distances uninformative.</p>
{_sanity_table(metrics)}</div><div><div id=fig-sanity class=fig></div></div></section>"""
        )
    sections.append(_run_section(metrics, run, errors))
    return sections


def render_report(
    metrics: dict,
    clusters: pd.DataFrame,
    summaries: dict | None = None,
    run: dict | None = None,
    errors: pd.DataFrame | None = None,
    cfg: AnalysisConfig = _CFG,
    out: str | None = None,
    matrix: np.ndarray | None = None,
    duplicates: pd.DataFrame | None = None,
) -> str:
    """The report as one HTML string (see the module docstring for how text is escaped).

    ``out`` (where the report will lie) lets the player link each local track relative to it;
    ``matrix`` (rows aligned with ``clusters``) ranks neighbours in the clustered space;
    ``duplicates``: OUT/duplicates.parquet's pairs.
    """
    n_all = len(clusters)
    rows = _sample_rows(n_all, cfg.report_max_points, cfg.random_state)
    df = clusters.iloc[rows].reset_index(drop=True)
    drawn_matrix = None if matrix is None else np.asarray(matrix)[rows]
    data = {
        "n_points": int(len(df)),
        "hover": _hover_texts(df),
        "projections": _projections(df, metrics),
        "colorings": _colorings(df, metrics.get("label_col"), cfg.report_max_categories),
        "default_color": "kmeans",
        "player": _player_data(df, out, drawn_matrix, cfg.report_neighbours),
        **_chart_data(metrics),
    }
    pairs = duplicates_html(
        metrics.get("duplicates"), duplicates, clusters, cfg.report_duplicate_pairs
    )
    sections = _sections(metrics, summaries or {}, data, run or {}, errors, n_all, pairs)
    return _page(metrics, sections, data)


def _page(metrics: dict, sections: list[str], data: dict) -> str:
    title = "soundclust report"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    matrix = metrics.get("matrix") or {}
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_CSS}</style>
<script type="{BUNDLE_MEDIA_TYPE}" id=plotly-bundle>{plotly_gzip_base64()}</script>
</head><body>
<header><h1>{esc(title)}</h1><p class=muted>{_fmt(metrics.get("n_tracks", 0))} tracks ·
matrix {esc(matrix.get("matrix", "?"))} · k = {esc(metrics.get("k", "?"))} ·
generated {generated}</p>
</header>
<main><p id=load-error class=empty hidden></p>{"".join(sections)}</main>
<script type="application/json" id=report-data>{script_json(_json_ready(data))}</script>
<script>{_report_js()}</script>
</body></html>
"""


def _report_js() -> str:
    from importlib.resources import files

    return files("soundclust_ray.report").joinpath("report.js").read_text(encoding="utf-8")


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj


def write_report(
    out: str,
    metrics: dict,
    clusters: pd.DataFrame,
    summaries: dict | None = None,
    run: dict | None = None,
    cfg: AnalysisConfig | None = None,
    matrix: np.ndarray | None = None,
) -> str:
    """Render and write OUT/report.html (atomically); returns its path."""
    from soundclust_ray.analysis.duplicates import read_duplicates

    errors, pairs = _read_errors(out), read_duplicates(out)
    text = render_report(metrics, clusters, summaries, run, errors, cfg or _CFG, out, matrix, pairs)
    return outdir.write_bytes(out, outdir.REPORT, text.encode("utf-8"))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{padding:18px 28px;background:#1d2330;color:#fff}header h1{margin:0 0 4px;font-size:22px}
header .muted{color:#c9cfdb}
main{padding:12px 28px 40px}section{background:#fff;border-radius:8px;padding:12px 18px;
margin:14px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:6px 0 10px}h3{font-size:14px;margin:14px 0 6px}
.maps{display:grid;grid-template-columns:1fr 1fr;gap:12px}.map{height:520px}
.fig{height:380px}.cols{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media(max-width:1000px){.maps,.cols{grid-template-columns:1fr}}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{border-bottom:1px solid #e3e6eb;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f2f5}
table.summary td{max-width:420px;overflow-wrap:anywhere}
.muted{color:#6b7280;font-size:13px}.controls{margin:0 0 8px}select{font-size:14px;padding:2px 6px}
pre{font-size:12px;background:#f0f2f5;padding:8px;overflow:auto;max-height:420px}
.empty{display:flex;align-items:center;justify-content:center;color:#6b7280;height:100%;
border:1px dashed #c8c8c8;border-radius:6px}
#player-panel{margin-top:10px;padding:8px 12px;background:#f6f7f9;border-radius:6px}
#now-playing{font-weight:600;margin:4px 0;overflow-wrap:anywhere}audio{width:100%;max-width:640px}
#neighbours{columns:2;font-size:13px;margin:6px 0}#neighbours button{border:0;background:none;
color:#1f5fbf;cursor:pointer;padding:1px 0;text-align:left;font:inherit;overflow-wrap:anywhere}
#neighbours button:hover{text-decoration:underline}
"""
