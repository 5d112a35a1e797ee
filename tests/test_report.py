"""The run report: segment descriptions, figures, the self-contained HTML page, and how the page
looks in a real browser (headless Debian Chromium driven by Playwright; no Spark)."""

from __future__ import annotations

import base64
import io
import math
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from matplotlib.image import imread

from segmentation.report import LOST, NEW, ReportInputs, describe_segment, render_report
from segmentation.report.describe import MISSING, format_number, format_percent
from segmentation.report.render import (
    customer_figures,
    render_figures,
    report_files,
    summary_figures,
)

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "out" / "report-screenshot.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RFM = ["recency_days", "frequency", "monetary"]

# --------------------------------------------------------------------------------------------
# Realistic fake inputs: a retail run with 5 segments, a k sweep 2..8, 2000 sampled customers,
# the classic RFM grid, and a comparison with an earlier run.

SEGMENTS: List[Tuple[str, Dict[str, float], int, float]] = [
    # name, standardised centroid, customers, value share
    ("champions", {"recency_days": -1.21, "frequency": 1.62, "monetary": 1.55}, 912, 0.6132),
    ("loyal", {"recency_days": -0.64, "frequency": 0.71, "monetary": 0.58}, 1104, 0.2105),
    ("promising", {"recency_days": -0.83, "frequency": -0.62, "monetary": -0.55}, 803, 0.0491),
    ("needs attention", {"recency_days": 0.42, "frequency": 0.12, "monetary": 0.21}, 689, 0.0874),
    ("hibernating", {"recency_days": 1.34, "frequency": -1.05, "monetary": -1.12}, 874, 0.0398),
]
# Typical raw values per segment: recency days, orders, spend.
TYPICAL = {
    "champions": (12.0, 18.0, 6200.0),
    "loyal": (35.0, 7.0, 2100.0),
    "promising": (28.0, 1.5, 310.0),
    "needs attention": (120.0, 3.0, 900.0),
    "hibernating": (260.0, 1.1, 180.0),
}
GRID_LAYOUT: Dict[Tuple[int, int], str] = {}
for _r in range(1, 6):
    for _fm in range(1, 6):
        if _r <= 2:
            _name = "hibernating" if _fm <= 2 else "at risk" if _fm <= 4 else "cannot lose them"
        elif _r == 3:
            _name = "about to sleep" if _fm <= 2 else "need attention" if _fm == 3 else "loyal"
        elif _r == 4:
            _name = "promising" if _fm == 1 else "potential loyalists" if _fm <= 3 else "loyal"
        else:
            _name = (
                "new customers"
                if _fm == 1
                else "potential loyalists"
                if _fm <= 3
                else "champions"
            )
        GRID_LAYOUT[(_r, _fm)] = _name


def make_profiles(names: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    total = sum(n for _, _, n, _ in SEGMENTS)
    profiles = []
    for cluster, (name, centroid, customers, value_share) in enumerate(SEGMENTS):
        recency, frequency, spend = TYPICAL[name]
        profile: Dict[str, Any] = {
            "cluster": cluster,
            "segment": names[cluster] if names else name,
            "customers": customers,
            "customer_share": customers / total,
            "value_share": value_share,
            "mean_recency_days": recency * 1.2,
            "median_recency_days": recency,
            "mean_frequency": frequency * 1.3,
            "median_frequency": round(frequency),
            "mean_monetary": spend * 1.4,
            "median_monetary": spend,
        }
        for feature, z in centroid.items():
            profile[f"centroid_{feature}"] = z
        profiles.append(profile)
    return profiles


def make_k_selection(stability: bool = True) -> List[Dict[str, Any]]:
    rows = []
    for k in range(2, 9):
        row: Dict[str, Any] = {
            "k": k,
            "wssse": 14000.0 * math.exp(-0.45 * (k - 2)) + 2500.0,
            "silhouette": [0.55, 0.58, 0.61, 0.66, 0.59, 0.57, 0.52][k - 2],
            "davies_bouldin": [0.92, 0.85, 0.81, 0.74, 0.83, 0.86, 0.9][k - 2],
            "calinski_harabasz": 3100.0 + 150.0 * k,
            "chosen": k == 5,
        }
        if stability:
            row["stability"] = [0.97, 0.93, 0.9, 0.91, 0.82, 0.78, 0.74][k - 2]
        rows.append(row)
    rows[-1]["silhouette"] = None  # a metric may be undefined for some k
    return rows


def make_sample(size: int = 2000, seed: int = 7) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    weights = [n for _, _, n, _ in SEGMENTS]
    names = [name for name, _, _, _ in SEGMENTS]
    rows = []
    for _ in range(size):
        name = rng.choices(names, weights)[0]
        recency, frequency, _spend = TYPICAL[name]
        rows.append(
            {
                "recency_days": max(1, round(rng.lognormvariate(math.log(recency), 0.5))),
                "frequency": max(1, round(rng.lognormvariate(math.log(frequency), 0.6))),
                "segment": name,
            }
        )
    return rows


def make_rfm_grid(seed: int = 11) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for (r, fm), name in sorted(GRID_LAYOUT.items()):
        if (r, fm) == (5, 1):
            continue  # an empty cell: its name must still show in the figure
        customers = rng.randint(20, 400) + (300 if r + fm >= 9 else 0)
        rows.append({"r_score": r, "fm_score": fm, "rfm_segment": name, "customers": customers})
    return rows


def make_migration() -> List[Dict[str, Any]]:
    earlier = {"champions": 850, "loyal": 1000, "promising": 700, "needs attention": 760,
               "hibernating": 800, NEW: 400}
    rng = random.Random(3)
    names = [name for name, _, _, _ in SEGMENTS]
    rows = []
    for source, total in earlier.items():
        targets = [*names, LOST] if source != NEW else list(names)
        weights = [rng.random() + (4 if t == source else 0) for t in targets]
        counts = [round(total * w / sum(weights)) for w in weights]
        for target, count in zip(targets, counts):
            if count:
                rows.append({"from_segment": source, "to_segment": target, "customers": count,
                             "share": count / sum(counts)})
    return rows


def make_inputs(
    *,
    k_selection: Optional[List[Dict[str, Any]]] = None,
    migration: Optional[List[Dict[str, Any]]] = None,
    names: Optional[List[str]] = None,
) -> ReportInputs:
    profiles = make_profiles(names)
    return ReportInputs(
        title="Customer segments: Online Retail II",
        run={
            "command": "run",
            "source": "retail",
            "input": "s3://bucket/in/online_retail_II.csv.gz",
            "reference_date": "2011-12-10",
            "customers": sum(p["customers"] for p in profiles),
            "algorithm": "MLlib KMeans (k-means||)",
            "chosen_k": 5,
            "transform": "log-standard",
            "created_at": "2024-05-01T12:00:00Z",
        },
        feature_columns=RFM,
        value_column="monetary",
        value_label="revenue",
        k_selection=make_k_selection() if k_selection is None else k_selection,
        profiles=profiles,
        sample=make_sample(),
        rfm_grid=make_rfm_grid(),
        grid_layout=GRID_LAYOUT,
        migration=migration,
    )


@pytest.fixture(scope="module")
def full() -> Dict[str, bytes]:
    """The report of the fake retail run with a comparison to an earlier run."""
    return render_report(make_inputs(migration=make_migration()))


# --------------------------------------------------------------------------------------------
# describe_segment


def test_describe_champions() -> None:
    profile = {"centroid_recency_days": -1.1, "centroid_frequency": 1.4,
               "centroid_monetary": 1.6, "customer_share": 0.2149, "value_share": 0.8051}
    assert describe_segment(profile, RFM, "revenue") == (
        "active recently, frequent, spends a lot; 21% of customers, 81% of revenue"
    )


def test_describe_avito_lapsed_without_value_share() -> None:
    profile = {"centroid_recency_days": 1.2, "centroid_frequency": -0.8,
               "centroid_engagement": 0.0, "customer_share": 0.004, "value_share": None}
    features = ["recency_days", "frequency", "engagement"]
    assert describe_segment(profile, features, "clicks") == (
        "inactive for a long time, infrequent, moderately engaged; <1% of customers"
    )


def test_describe_thresholds_are_inclusive_for_average() -> None:
    profile = {"centroid_recency_days": 0.5, "centroid_frequency": -0.5,
               "centroid_monetary": 0.5000001, "customer_share": 0.125, "value_share": 0.5}
    assert describe_segment(profile, RFM, "revenue") == (
        "last active a while ago, moderately frequent, spends a lot; "
        "13% of customers, 50% of revenue"
    )


def test_describe_generic_features_missing_centroids_and_value_label() -> None:
    profile = {"centroid_average_order_value": -0.9, "centroid_tenure_days": 2.0,
               "customer_share": 0.3, "value_share": -0.02}
    features = ["recency_days", "average_order_value", "tenure_days"]
    assert describe_segment(profile, features, "") == (
        "low average order value, long-standing; 30% of customers, -2% of value"
    )
    assert describe_segment({}, features, "revenue") == ""


def test_number_formats() -> None:
    assert format_percent(0.2149) == "21%"
    assert format_percent(0.2149, 1) == "21.5%"
    assert format_percent(0.0004, 1) == "<0.1%"
    assert format_percent(-0.0001) == "0%"
    assert format_percent(None) == MISSING
    assert format_number(1234567) == "1,234,567"
    assert format_number(37.25) == "37.2"
    assert format_number(4.127) == "4.13"
    assert format_number(float("nan")) == MISSING


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="no segment profiles"):
        ReportInputs(title="t", run={}, feature_columns=RFM, value_column=None,
                     value_label="revenue", profiles=[])
    with pytest.raises(ValueError, match="customer_share"):
        ReportInputs(title="t", run={}, feature_columns=RFM, value_column=None,
                     value_label="revenue",
                     profiles=[{"cluster": 0, "segment": "a", "customers": 1}])


# --------------------------------------------------------------------------------------------
# render_report

# In page order.
ALL_FIGURES = ["segment_sizes.png", "centroids.png", "recency_frequency.png", "elbow.png",
               "silhouette.png", "rfm_grid.png", "migration.png"]


def embedded_images(html: str) -> List[bytes]:
    sources = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]+">', html)
    assert len(sources) == html.count("<img"), "every <img> is a PNG data URI with alt text"
    return [base64.b64decode(s) for s in sources]


def check_pngs(files: Dict[str, bytes]) -> None:
    for name, data in files.items():
        if not name.endswith(".png"):
            continue
        assert data.startswith(PNG_SIGNATURE), name
        image = imread(io.BytesIO(data), format="png")
        height, width = image.shape[:2]
        assert 250 <= width <= 1200 and 250 <= height <= 1000, (name, width, height)
        assert image.std() > 0.05, f"{name} is blank"


def test_render_full_report(full: Dict[str, bytes]) -> None:
    assert sorted(full) == sorted(["report.html", *ALL_FIGURES])
    check_pngs(full)
    html = full["report.html"].decode("utf-8")
    images = embedded_images(html)
    assert images == [full[name] for name in ALL_FIGURES], "figures embedded in page order"
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    # Profile table: one row per segment, with its description.
    profiles = re.search(r'<table class="wide profiles">(.*?)</table>', html, re.S)
    assert profiles is not None
    assert profiles.group(1).count("<tr>") == 1 + len(SEGMENTS)
    for name, _, customers, _ in SEGMENTS:
        assert f"{name}</td>" in profiles.group(1)
        assert f"<td class=\"num\">{customers:,}</td>" in profiles.group(1)
    assert "active recently, frequent, spends a lot; 21% of customers, 61% of revenue" in html
    assert "median 6,200" in html
    # k-selection table: 7 rows, k = 5 chosen; stability shown; the undefined silhouette is MISSING.
    k_table = re.search(r'<table class="k-selection">(.*?)</table>', html, re.S)
    assert k_table is not None
    assert k_table.group(1).count("<tr") == 1 + 7
    assert re.search(r'<tr class="chosen">\s*<td class="num">5<span', k_table.group(1))
    assert "Stability</th>" in k_table.group(1)
    assert f'<td class="num">{MISSING}</td>' in k_table.group(1)
    assert "Movement since the last run" in html
    assert "scored with a saved model" not in html
    assert len(full["report.html"]) < 800_000, "report too large"


def test_figures_drawn_in_two_parts_make_the_same_report(full: Dict[str, bytes]) -> None:
    # A run draws the figures without customer rows while it collects those rows.
    inputs = make_inputs(migration=make_migration())
    parts = {**customer_figures(inputs), **summary_figures(inputs)}  # not in page order
    assert sorted(parts) == sorted(ALL_FIGURES)
    assert report_files(inputs, parts) == full
    assert list(render_figures(inputs)) == list(ALL_FIGURES)


def test_render_without_migration_and_sweep() -> None:
    files = render_report(make_inputs(k_selection=[], migration=None))
    assert sorted(files) == sorted(
        ["report.html", "segment_sizes.png", "centroids.png", "recency_frequency.png",
         "rfm_grid.png"]
    )
    check_pngs(files)
    html = files["report.html"].decode("utf-8")
    assert len(embedded_images(html)) == 4
    assert "scored with a saved model" in html
    assert 'class="k-selection"' not in html
    assert "Movement since the last run" not in html


def test_render_minimal_avito_report() -> None:
    """Clicks as value, no RFM grid, no sample, single k without stability, an empty migration."""
    profiles = [
        {"cluster": 0, "segment": "champions", "customers": 10, "customer_share": 0.25,
         "value_share": 0.9, "centroid_recency_days": -1.0, "centroid_frequency": 1.2,
         "centroid_engagement": 0.8, "mean_frequency": 3.0},
        {"cluster": 1, "segment": "hibernating", "customers": 30, "customer_share": 0.75,
         "value_share": 0.1, "centroid_recency_days": 0.4, "centroid_frequency": -0.4,
         "centroid_engagement": None},
    ]
    inputs = ReportInputs(
        title="Avito", run={"source": "avito", "seed": None}, value_column="frequency",
        feature_columns=["recency_days", "frequency", "engagement"], value_label="clicks",
        k_selection=[{"k": 2, "wssse": 12.0, "silhouette": None, "davies_bouldin": None,
                      "calinski_harabasz": None, "chosen": True}],
        profiles=profiles, migration=[],
    )
    files = render_report(inputs)
    assert sorted(files) == sorted(
        ["report.html", "elbow.png", "silhouette.png", "segment_sizes.png", "centroids.png"]
    )
    check_pngs(files)
    html = files["report.html"].decode("utf-8")
    assert "Share of clicks" in html and "Stability" not in html
    assert "found no customers" in html
    assert "active recently, frequent, highly engaged; 25% of customers, 90% of clicks" in html


def test_render_escapes_segment_names() -> None:
    names = ["<script>alert(1)</script>", "a & b", '"quoted"', "$5 spenders", "hibernating"]
    files = render_report(make_inputs(names=names))
    html = files["report.html"].decode("utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    assert "&#34;quoted&#34;" in html
    check_pngs(files)


def test_render_is_deterministic(full: Dict[str, bytes]) -> None:
    assert render_report(make_inputs(migration=make_migration())) == full


# --------------------------------------------------------------------------------------------
# In a browser, the way a person sees it


def test_report_in_browser(full: Dict[str, bytes], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh`"
    page_path = tmp_path / "report.html"
    page_path.write_bytes(full["report.html"])
    requests: List[str] = []
    errors: List[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => "
                "({alt: i.alt, complete: i.complete, width: i.naturalWidth, shown: i.width}))"
            )
            rows = page.evaluate(
                "() => Object.fromEntries(['facts', 'profiles', 'k-selection', 'rfm-segments', "
                "'migration'].map(c => [c, document.querySelectorAll("
                "`table.${c} tbody tr`).length]))"
            )
            title = page.title()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()

    assert title == "Customer segments: Online Retail II"
    assert len(images) == len(ALL_FIGURES)
    for image in images:
        assert image["complete"] and image["width"] > 0, f"not decoded: {image['alt']}"
        assert image["shown"] > 200, f"shown too small: {image['alt']}"
    assert rows == {
        "facts": 9,
        "profiles": len(SEGMENTS),
        "k-selection": 7,
        "rfm-segments": len(set(GRID_LAYOUT.values())),
        "migration": len(make_migration()),
    }
    assert errors == [], errors
    assert all(url.startswith(("file://", "data:")) for url in requests), requests

    shot = SCREENSHOT.read_bytes()
    assert shot.startswith(PNG_SIGNATURE)
    pixels = imread(io.BytesIO(shot), format="png")
    height, width = pixels.shape[:2]
    assert width == 1280 and height > 3000, (width, height)
    assert pixels.std() > 0.05, "screenshot is blank"
