// Zoom and search for minikvm's flame graph SVG (minikvm/observe/svg.py).
// Each frame is <g class="frame" data-name data-samples data-x data-width
// data-level> holding a <rect> and maybe a <text>; data-x/data-width are
// the unzoomed geometry, so zooming is a pure function of them.
"use strict";
var frames = Array.prototype.slice.call(document.querySelectorAll("g.frame"));
var svgWidth = Number(document.documentElement.getAttribute("width"));
var charWidth = Number(document.documentElement.getAttribute("data-char-width"));
var searchPattern = null;

function geometry(g) {
  return {x: Number(g.getAttribute("data-x")), width: Number(g.getAttribute("data-width")),
          level: Number(g.getAttribute("data-level"))};
}

function place(g, x, width) {
  var rect = g.querySelector("rect"), text = g.querySelector("text");
  rect.setAttribute("x", x.toFixed(1));
  rect.setAttribute("width", width.toFixed(1));
  if (!text) {
    text = document.createElementNS("http://www.w3.org/2000/svg", "text");
    text.setAttribute("y", Number(rect.getAttribute("y")) + Number(rect.getAttribute("height")) - 3);
    text.setAttribute("font-family", "Verdana");
    text.setAttribute("font-size", "12");
    g.appendChild(text);
  }
  var name = g.getAttribute("data-name"), fits = Math.floor((width - 6) / charWidth);
  text.setAttribute("x", (x + 3).toFixed(1));
  text.textContent = fits < 3 ? "" : name.length <= fits ? name : name.slice(0, fits - 2) + "..";
}

function zoom(target) {
  var t = geometry(target), scale = svgWidth / t.width;
  frames.forEach(function (g) {
    var f = geometry(g), inside = f.x >= t.x - 1e-6 && f.x + f.width <= t.x + t.width + 1e-6;
    var below = f.level < t.level && f.x <= t.x + 1e-6 && f.x + f.width >= t.x + t.width - 1e-6;
    g.style.display = inside && f.level >= t.level || below ? "" : "none";
    g.style.opacity = below ? "0.6" : "";
    if (inside && f.level >= t.level) place(g, (f.x - t.x) * scale, f.width * scale);
    else if (below) place(g, 0, svgWidth);
  });
  document.getElementById("reset-zoom").style.opacity = "1";
}

function resetZoom() {
  frames.forEach(function (g) {
    var f = geometry(g);
    g.style.display = "";
    g.style.opacity = "";
    place(g, f.x, f.width);
  });
  document.getElementById("reset-zoom").style.opacity = "0";
}

// Highlight frames whose name matches; the matched share counts each
// sample once, by merging the matched frames' unzoomed spans.
function search() {
  var answer = prompt("Search for frames matching (regular expression):", searchPattern || "");
  if (answer === null) return;
  var pattern;
  try { pattern = answer ? new RegExp(answer) : null; }
  catch (error) { alert("Not a regular expression: " + error.message); return; }
  searchPattern = answer;
  var spans = [];
  frames.forEach(function (g) {
    var rect = g.querySelector("rect"), hit = pattern && pattern.test(g.getAttribute("data-name"));
    if (!rect.hasAttribute("data-fill")) rect.setAttribute("data-fill", rect.getAttribute("fill"));
    rect.setAttribute("fill", hit ? "rgb(230,0,230)" : rect.getAttribute("data-fill"));
    if (hit) { var f = geometry(g); spans.push([f.x, f.x + f.width]); }
  });
  spans.sort(function (a, b) { return a[0] - b[0]; });
  var covered = 0, end = -1;
  spans.forEach(function (span) {
    if (span[1] <= end) return;
    covered += span[1] - Math.max(span[0], end);
    end = span[1];
  });
  document.getElementById("matched").textContent =
      pattern ? "Matched: " + (100 * covered / svgWidth).toFixed(2) + "%" : "";
}

frames.forEach(function (g) {
  g.addEventListener("click", function () { zoom(g); });
});
document.getElementById("reset-zoom").addEventListener("click", resetZoom);
document.getElementById("search").addEventListener("click", search);
