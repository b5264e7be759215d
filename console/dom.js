// Small DOM helpers. Text from the API only ever becomes a text node or an
// attribute value, never markup.

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// h builds an element: h('a', {href: '#/orgs', class: 'x', onclick: f}, 'text', child).
// "value" is set after the children, so it works for a select and its options.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  const { value, ...attrs } = props || {};
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k === 'className' ? 'class' : k, v === true ? '' : String(v));
  }
  add(el, children);
  if (value !== undefined) el.value = value;
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

// s builds an SVG element the same way.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null) el.setAttribute(k, String(v));
  }
  add(el, children);
  return el;
}

let ids = 0;
export const uid = (prefix) => `${prefix}-${++ids}`;

// field is a label, a control and an optional hint, tied together for screen readers.
export function field(label, control, hint) {
  control.id ||= uid('f');
  const hintEl = hint ? h('p', { class: 'hint', id: control.id + '-hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

// select is a <select> of [value, text] options, set to value.
export const select = (id, options, value) =>
  h('select', { id, value }, options.map(([v, t]) => h('option', { value: v }, t)));

// muted is a quiet text: "never", "none".
export const muted = (text) => h('span', { class: 'muted' }, text);

// errorBox is where an action's error shows, next to where the user acted.
export const errorBox = () => h('p', { class: 'error', role: 'alert', hidden: true });

export function showError(box, err) {
  const detail = [err.code, err.requestId && 'request ' + err.requestId].filter(Boolean).join(', ');
  // (replaceChildren would write a null as "null")
  box.replaceChildren(h('strong', null, err.message || String(err)), ...(detail ? [h('span', { class: 'detail' }, ` (${detail})`)] : []));
  box.hidden = false;
}

export function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}

// reporting wraps a page's loads: each runs its step f, then shows the
// page's state with show, or f's error in box. A step that returns false
// changed nothing, and nothing is shown.
export function reporting(box, show) {
  return (f) => async () => {
    try {
      if ((await f()) === false) return;
      hideError(box);
      show();
    } catch (e) {
      showError(box, e);
    }
  };
}

// busy disables a button while an action runs.
export async function busy(button, f) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await f();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const rel = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
const UNITS = [['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400], ['hour', 3600], ['minute', 60]];

export const fullTime = (iso) => dateTime.format(new Date(iso));

// ago says "just now", "3 minutes ago" or "in 2 days".
export function ago(iso, now = Date.now()) {
  const secs = (Date.parse(iso) - now) / 1000;
  if (Math.abs(secs) < 45) return 'just now';
  const [unit, n] = UNITS.find(([, n]) => Math.abs(secs) >= n) || UNITS[UNITS.length - 1];
  return rel.format(Math.round(secs / n), unit);
}

// when is a <time> that shows ago() and the full time on hover; refreshTimes updates it.
export function when(iso, text = ago(iso)) {
  return h('time', { datetime: iso, title: fullTime(iso), 'data-ago': '' }, text);
}

export function refreshTimes(root) {
  for (const t of root.querySelectorAll('time[data-ago]')) t.textContent = ago(t.getAttribute('datetime'));
}
