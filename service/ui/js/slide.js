// The pathologist's slide view: the slide in OpenSeadragon from aidx's DeepZoom tiles
// (the image is level 0, so the report's regions, in level-0 pixels, are drawn as they
// are), the regions outlined and numbered, the heatmap as a layer over the whole slide,
// and the region list: a click zooms to a region; agree / disagree / not sure per region
// through the feedback API (an answer names the finding and the region's index).
import { api, ApiError } from "./api.js";
import { cell, span } from "./dom.js";
import { formatDateTime, formatPercent, label, language, t } from "./i18n.js";

const OSD_SCRIPT = "vendor/openseadragon/openseadragon.min.js";
const SVG = "http://www.w3.org/2000/svg";
const VERDICTS = ["agree", "disagree", "not_sure"];
const HEAT_OPACITY = 0.55;
let loading = null;
let viewer = null;

function formatNumber(value) {
  return new Intl.NumberFormat(language(), { maximumFractionDigits: 2 }).format(value);
}

function byId(id) {
  return document.getElementById(id);
}

// OpenSeadragon is a classic script (a global), loaded once, on the first slide.
function openSeadragon() {
  loading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = OSD_SCRIPT;
    script.onload = () => resolve(window.OpenSeadragon);
    script.onerror = () => {
      loading = null;
      reject(new ApiError(0, "viewer_missing", OSD_SCRIPT));
    };
    document.head.append(script);
  });
  return loading;
}

// The DZI descriptor (fetched, so that a refusal shows its code) as OpenSeadragon's
// object form, with the tiles' URL given: /tiles/{level}/{col}_{row}.jpeg.
async function tileSource(rid) {
  const answer = await fetch(`/v1/wsi/reports/${rid}/dzi`, { credentials: "same-origin" });
  if (!answer.ok) {
    const data = await answer.json().catch(() => ({}));
    throw new ApiError(answer.status, data.code || `http_${answer.status}`, data.message);
  }
  const image = new DOMParser().parseFromString(await answer.text(), "application/xml")
    .documentElement;
  const size = image.getElementsByTagNameNS(image.namespaceURI, "Size")[0];
  return {
    Image: {
      xmlns: image.namespaceURI,
      Url: `/v1/wsi/reports/${rid}/tiles/`,
      Format: image.getAttribute("Format"),
      Overlap: image.getAttribute("Overlap"),
      TileSize: image.getAttribute("TileSize"),
      Size: { Width: size.getAttribute("Width"), Height: size.getAttribute("Height") },
    },
  };
}

function showMeta(report, finding) {
  byId("slide-model").textContent = `${report.model.name} v${report.model.version}`;
  byId("slide-created").textContent = formatDateTime(report.created_at);
  byId("slide-finding").textContent = finding
    ? `${label("slide.finding", finding.concept.meaning)}: ${
      finding.probability == null ? "—" : formatPercent(finding.probability)}`
    : "—";
  const notAssessed = byId("slide-not-assessed");
  notAssessed.hidden = !report.not_assessed;
  if (report.not_assessed) {
    notAssessed.textContent = t("report.not_assessed", {
      reason: label("na", report.not_assessed.reason),
    });
  }
  byId("slide-disclaimer").hidden = !report.model.demo_weights;
}

// Outlines: one SVG over the viewer, its group scaled from level-0 pixels to the
// screen on every frame; the numbers are placed in screen pixels (constant size).
class Outlines {
  constructor(osd, slide, regions) {
    this.osd = osd;
    this.slide = slide;
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.classList.add("slide-outlines");
    this.group = document.createElementNS(SVG, "g");
    this.svg.append(this.group);
    this.labels = regions.map((region, index) => this.add(region, index));
    osd.canvas.append(this.svg);
    for (const name of ["animation", "update-viewport", "resize", "open"]) {
      osd.addHandler(name, () => this.place());
    }
  }

  add(region, index) {
    const ring = region.polygon_px ?? [
      [region.x_min_px, region.y_min_px], [region.x_max_px, region.y_min_px],
      [region.x_max_px, region.y_max_px], [region.x_min_px, region.y_max_px],
    ];
    const outline = document.createElementNS(SVG, "polygon");
    outline.setAttribute("points", ring.map(([x, y]) => `${x},${y}`).join(" "));
    outline.classList.add("region-outline");
    outline.dataset.region = String(index);
    this.group.append(outline);
    const number = document.createElementNS(SVG, "text");
    number.textContent = String(index + 1);
    number.classList.add("region-number");
    this.svg.append(number);
    return { number, x: region.x_min_px, y: region.y_min_px };
  }

  screen(x, y) {
    const point = this.slide.imageToViewportCoordinates(x, y, true);
    return this.osd.viewport.viewportToViewerElementCoordinates(point);
  }

  place() {
    const origin = this.screen(0, 0);
    const unit = this.screen(1000, 0).x - origin.x;
    this.group.setAttribute(
      "transform", `translate(${origin.x} ${origin.y}) scale(${unit / 1000})`,
    );
    for (const { number, x, y } of this.labels) {
      const at = this.screen(x, y);
      number.setAttribute("x", String(at.x + 4));
      number.setAttribute("y", String(at.y - 6));
    }
  }
}

// Where the view is, in level-0 pixels, on the viewer's element: what a test (or a
// reader of the page) can check after a click on a region.
function recordView(osd, slide, element) {
  const viewport = osd.viewport;
  const centre = slide.viewportToImageCoordinates(viewport.getCenter(true));
  element.dataset.zoom = String(slide.viewportToImageZoom(viewport.getZoom(true)));
  element.dataset.centreX = String(Math.round(centre.x));
  element.dataset.centreY = String(Math.round(centre.y));
}

function zoomTo(region) {
  const slide = viewer.world.getItemAt(0);
  const pad = 0.1 * Math.max(region.x_max_px - region.x_min_px, region.y_max_px - region.y_min_px);
  viewer.viewport.fitBounds(slide.imageToViewportRectangle(
    region.x_min_px - pad, region.y_min_px - pad,
    region.x_max_px - region.x_min_px + 2 * pad, region.y_max_px - region.y_min_px + 2 * pad,
  ));
}

function heatLayer(rid, slide) {
  const toggle = byId("slide-heat-toggle");
  const element = byId("slide-viewer");
  toggle.checked = false;
  toggle.disabled = true;
  element.dataset.heat = "hidden";
  const bounds = slide.getBounds();
  viewer.addTiledImage({
    tileSource: { type: "image", url: `/v1/reports/${rid}/overlay.png` },
    x: bounds.x, y: bounds.y, width: bounds.width, opacity: 0,
    success: ({ item }) => {
      toggle.disabled = false;
      toggle.onchange = () => {
        item.setOpacity(toggle.checked ? HEAT_OPACITY : 0);
        element.dataset.heat = toggle.checked ? "shown" : "hidden";
      };
    },
  });
}

async function openViewer(OpenSeadragon, rid, regions) {
  viewer?.destroy();
  const element = byId("slide-viewer");
  element.replaceChildren();
  viewer = OpenSeadragon({
    element,
    tileSources: await tileSource(rid),
    prefixUrl: "vendor/openseadragon/images/",
    drawer: "canvas",
    showNavigator: true,
    showNavigationControl: false,
    visibilityRatio: 0.5,
    maxZoomPixelRatio: 2,
    gestureSettingsMouse: { clickToZoom: false },
  });
  await new Promise((resolve, reject) => {
    viewer.addOnceHandler("open", resolve);
    viewer.addOnceHandler("open-failed", () => reject(new ApiError(0, "slide_open_failed")));
  });
  const slide = viewer.world.getItemAt(0);
  new Outlines(viewer, slide, regions).place();
  viewer.addHandler("animation-finish", () => recordView(viewer, slide, element));
  recordView(viewer, slide, element);
  heatLayer(rid, slide);
  byId("slide-home").onclick = () => viewer.viewport.goHome();
}

function verdictButtons(rid, finding, index, mine) {
  const group = document.createElement("span");
  group.className = "verdicts";
  group.setAttribute("role", "group");
  for (const verdict of VERDICTS) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.verdict = verdict;
    button.textContent = t(`verdict.${verdict}`);
    button.setAttribute("aria-pressed", String(mine?.verdict === verdict));
    button.onclick = (event) => {
      event.stopPropagation(); // answering is not zooming
      answer(rid, finding, index, verdict, group);
    };
    group.append(button);
  }
  group.append(span("", "saved"));
  return group;
}

async function answer(rid, finding, region, verdict, group) {
  const saved = group.querySelector(".saved");
  try {
    await api(`/v1/reports/${rid}/feedback`, {
      method: "POST", body: { answers: [{ finding, region, verdict }] },
    });
    for (const button of group.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.verdict === verdict));
    }
    saved.textContent = t("answer.saved");
  } catch (error) {
    saved.textContent = t("error.generic", { code: error instanceof ApiError ? error.code : "network" });
  }
}

function regionRows(rid, finding, feedback, session) {
  const rows = byId("slide-regions");
  rows.replaceChildren();
  const regions = finding?.regions ?? [];
  byId("slide-no-regions").hidden = regions.length > 0;
  const name = finding?.concept.meaning;
  const mine = new Map(feedback.current
    .filter((a) => a.by === session.name && a.finding === name && a.region != null)
    .map((a) => [a.region, a]));
  const answers = session.role === feedback.owner_role;
  regions.forEach((region, index) => {
    const tr = document.createElement("tr");
    tr.dataset.region = String(index);
    tr.className = "region-row";
    tr.tabIndex = 0;
    tr.title = t("slide.zoom");
    tr.onclick = () => zoomTo(region);
    tr.onkeydown = (event) => { if (event.key === "Enter") zoomTo(region); };
    tr.append(
      cell(span(String(index + 1), "region-badge")),
      cell(region.score == null ? "—" : formatPercent(region.score)),
      cell(region.area_mm2 == null ? "—" : formatNumber(region.area_mm2)),
      cell(answers ? verdictButtons(rid, name, index, mine.get(index)) : span("—")),
    );
    rows.append(tr);
  });
  return regions;
}

export async function showSlide(rid, session) {
  const [report, feedback] = await Promise.all([
    api(`/v1/reports/${rid}`),
    api(`/v1/reports/${rid}/feedback`),
  ]);
  const finding = report.findings[0];
  showMeta(report, finding);
  const regions = regionRows(rid, finding, feedback, session);
  await openViewer(await openSeadragon(), rid, regions);
}
