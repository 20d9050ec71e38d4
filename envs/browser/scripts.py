"""The JavaScript the browser env runs in pages: form fields for the detectors, the click-readiness check,
the detectors' JS expressions, the page state they need in one round trip, and the text of a page too large
to snapshot."""

FIELDS_JS = """() => {
  const out = [], seen = new Set();
  const text = el => (el ? el.innerText || el.textContent || '' : '').trim();
  for (const el of document.querySelectorAll('input, select, textarea')) {
    const type = (el.type || el.tagName).toLowerCase();
    if (['hidden', 'submit', 'button', 'reset', 'image'].includes(type)) continue;
    const label = el.labels && el.labels.length ? text(el.labels[0]) : (el.getAttribute('aria-label') || '');
    if (type === 'radio') {
      if (seen.has(el.name)) continue;
      seen.add(el.name);
      const group = [...document.querySelectorAll('input[type=radio]')].filter(r => r.name === el.name);
      const c = group.find(r => r.checked);
      const fs = el.closest('fieldset'), lg = fs && fs.querySelector('legend');
      out.push({id: '', name: el.name || '', label: lg ? text(lg) : '', type: 'radio',
                value: c ? ((c.labels && c.labels.length && text(c.labels[0])) || c.value) : '', checked: !!c});
      continue;
    }
    let value = el.value;
    if (el.tagName === 'SELECT') value = el.selectedOptions.length ? text(el.selectedOptions[0]) : '';
    out.push({id: el.id || '', name: el.name || '', label, type, value,
              checked: type === 'checkbox' ? el.checked : null});
  }
  return out;
}"""

# What Playwright's click waits for, checked in one round trip instead of over two animation frames: the
# element is attached, visible, enabled, nothing on it or its ancestors is animating (CSS animations and
# transitions, Web Animations, jQuery effects), and, after scrolling it into view, a point of it is on top:
# its center if that is, else the first point of a 5 x 5 grid over its box that is (where a person would
# click an element another one half covers). Returns that point relative to the element's padding box
# (Playwright's click `position`), that point in the viewport (cx, cy: where a drag presses the mouse) and
# whether the click opens a new tab (a link with a target), or null.
CLICK_POINT_JS = """el => {
  if (!el.isConnected || el.matches(':disabled')) return null;
  const style = getComputedStyle(el);
  if (style.visibility !== 'visible') return null;
  const doc = el.ownerDocument, win = doc.defaultView;
  if (doc.getAnimations().some(a => a.playState === 'running' && a.effect && a.effect.target
                                    && a.effect.target.contains(el))) return null;
  if (win.jQuery && win.jQuery.timers && win.jQuery.timers.length) return null;
  let box = el.getBoundingClientRect();
  if (box.width === 0 || box.height === 0) return null;
  if (box.top < 0 || box.left < 0 || box.bottom > win.innerHeight || box.right > win.innerWidth) {
    el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
    box = el.getBoundingClientRect();
  }
  const on = (x, y) => {
    let hit = doc.elementFromPoint(x, y);
    while (hit && hit.shadowRoot) {
      const inner = hit.shadowRoot.elementFromPoint(x, y);
      if (!inner || inner === hit) break;
      hit = inner;
    }
    return !!hit && (hit === el || el.contains(hit));
  };
  const points = [[0.5, 0.5]];
  for (const fy of [0.1, 0.3, 0.5, 0.7, 0.9]) for (const fx of [0.1, 0.3, 0.5, 0.7, 0.9]) points.push([fx, fy]);
  for (const [fx, fy] of points) {
    const x = box.left + box.width * fx, y = box.top + box.height * fy;
    if (x >= 0 && y >= 0 && x < win.innerWidth && y < win.innerHeight && on(x, y))
      return {x: x - box.left - parseFloat(style.borderLeftWidth), y: y - box.top - parseFloat(style.borderTopWidth), cx: x, cy: y,
              tab: !!el.closest('a[href][target]:not([target=""]):not([target="_self"]):not([target="_top"]):not([target="_parent"])')};
  }
  return null;
}"""


JS_BATCH = """exprs => exprs.map(e => { try { const v = (0, eval)(e); return v === undefined ? null : v; }
  catch (err) { return null; } })"""

# the page's title, and what the detectors need from it (form fields, their JS expressions): one round trip
PAGE_STATE_JS = f"""([fields, exprs]) => [document.title, fields ? ({FIELDS_JS})() : null, ({JS_BATCH})(exprs)]"""

#: the number of the page's elements (a page over the env's `max_obs_elements` is not snapshotted)
ELEMENTS_JS = "() => document.getElementsByTagName('*').length"

#: what can be read of a page too large to snapshot: its text, up to n characters
PAGE_TEXT_JS = "n => (document.body ? document.body.innerText : document.documentElement.textContent || '').slice(0, n)"


#: empties the browser's clipboard, which belongs to the whole browser, not to a context: one copy of
#: nothing, seen by no listener of the page (Playwright's evaluate counts as a user gesture)
CLEAR_CLIPBOARD_JS = """() => {
  const f = e => { e.stopImmediatePropagation(); e.preventDefault(); e.clipboardData.setData('text/plain', ''); };
  window.addEventListener('copy', f, {capture: true});
  try { return document.execCommand('copy'); } finally { window.removeEventListener('copy', f, {capture: true}); }
}"""
