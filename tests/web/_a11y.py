"""Accessibility checks run in the page (JavaScript for ``page.evaluate``)."""

from __future__ import annotations

# A stable name for an element: its id, else tag, href, name and text.
_SIGNATURE = """
const sig = (el) => el.id ? "#" + el.id : [el.tagName, el.getAttribute("href") || "",
  el.getAttribute("name") || "", (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 60)
].join("|");
"""

FOCUSABLE = (
    "() => {"
    + _SIGNATURE
    + """
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary, '
    + '[tabindex]:not([tabindex="-1"])';
  const shown = (el) => {
    const closed = el.closest("details:not([open])");
    if (closed && !(el.tagName === "SUMMARY" && el.parentElement === closed)) return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  return [...document.querySelectorAll(selector)].filter(shown).map(sig);
}"""
)

ACTIVE = (
    "() => {"
    + _SIGNATURE
    + """
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return [sig(el), style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2];
}"""
)

UNLABELLED = """() => {
  const text = (el) => (el ? el.textContent : "").trim();
  const bad = [];
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const labels = [...(el.labels || [])].map(text).filter(Boolean);
    const by = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean)
      .map((id) => text(document.getElementById(id))).filter(Boolean);
    if (!labels.length && !by.length && !(el.getAttribute("aria-label") || "").trim()) {
      bad.push(el.outerHTML.slice(0, 160));
    }
  }
  for (const el of document.querySelectorAll("button, a[href], summary")) {
    if (!text(el) && !(el.getAttribute("aria-label") || "").trim()) {
      bad.push(el.outerHTML.slice(0, 160));
    }
  }
  return bad;
}"""

LOW_CONTRAST = """() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const bad = [];
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    if (el.closest("svg, script, style, option, .visually-hidden")) continue;
    const closed = el.closest("details:not([open])");
    if (closed && !el.closest("summary")) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.right < 0) continue;
    const fg = parse(getComputedStyle(el).color);
    const l1 = lum(fg), l2 = lum(background(el));
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) {
      bad.push(`${ratio.toFixed(2)}: <${el.tagName.toLowerCase()} class="${el.className}"> `
        + node.textContent.trim().slice(0, 40));
    }
  }
  return bad;
}"""

WORDLESS_STATUS = """() => [...document.querySelectorAll(".badge")]
  .filter((b) => !/[A-Za-z]{3,}/.test(b.textContent)).map((b) => b.outerHTML.slice(0, 120))"""
