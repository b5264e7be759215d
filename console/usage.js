// Usage: requests per hour over the last 48 hours by status class, live and
// test apart, drawn as SVG bars stacked by class.
import { api, path } from './api.js';
import { h, s, uid, errorBox, showError, hideError, busy } from './dom.js';

const HOURS = 48;
const HOUR = 3600e3;
const EVERY = 15000;
const CLASSES = ['2xx', '4xx', '429', '5xx'];
const NAMES = { '2xx': 'success', '4xx': 'client error', '429': 'rate limited', '5xx': 'server error' };

const hourFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric' });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const slotFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

// series spreads the sparse buckets of one env over the last 48 hours.
function series(buckets, env, now = Date.now()) {
  const first = Math.floor(now / HOUR) * HOUR - (HOURS - 1) * HOUR;
  const slots = Array.from({ length: HOURS }, (_, i) => ({ t: first + i * HOUR, total: 0, '2xx': 0, '4xx': 0, '429': 0, '5xx': 0 }));
  for (const b of buckets) {
    const slot = slots[(Date.parse(b.hour) - first) / HOUR];
    if (b.env !== env || !slot) continue;
    for (const c of CLASSES) {
      slot[c] += b[c];
      slot.total += b[c];
    }
  }
  return slots;
}

// ticks are 0, half and top, with top 1, 2, 4, 6, 8 or 10 times a power of ten.
function ticks(max) {
  if (max <= 1) return [0, 1];
  const p = 10 ** Math.floor(Math.log10(max));
  const top = [1, 2, 4, 6, 8, 10].map((m) => m * p).find((v) => v >= max);
  return [0, top / 2, top];
}

const describe = (n) => CLASSES.filter((c) => n[c]).map((c) => `${n[c]} ${c}`).join(', ') || 'none';

function chart(env, slots, width) {
  const height = 200;
  const m = { top: 10, right: 16, bottom: 26, left: 40 };
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const max = Math.max(...slots.map((b) => b.total));
  const ys = ticks(max);
  const top = ys[ys.length - 1];
  const y = (v) => m.top + ph - (v / top) * ph;
  const bw = pw / HOURS;
  const gap = bw > 8 ? 2 : bw > 4 ? 1 : 0;
  const titleId = uid('chart');
  const totals = sum(slots);
  const svg = s('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-labelledby': titleId, 'data-env': env },
  s('title', { id: titleId }, `${env} requests per hour, last 48 hours: ${totals.total} in all (${describe(totals)}).`));

  for (const v of ys) {
    svg.append(s('line', { class: v ? 'grid' : 'axis', x1: m.left, x2: m.left + pw, y1: y(v), y2: y(v) }),
      s('text', { class: 'label', x: m.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, v));
  }
  const every = pw < 420 ? 12 : 6;
  slots.forEach((b, i) => {
    const x = m.left + i * bw;
    const d = new Date(b.t);
    if (d.getMinutes() === 0 && d.getHours() % every === 0 && x > m.left + 10 && x < width - 22) {
      svg.append(s('line', { class: 'axis', x1: x, x2: x, y1: m.top + ph, y2: m.top + ph + 4 }),
        s('text', { class: 'label', x, y: height - 8, 'text-anchor': 'middle' }, d.getHours() ? hourFmt.format(d) : dayFmt.format(d)));
    }
    if (!b.total) return;
    const g = s('g', { class: 'hour', 'data-hour': d.toISOString(), 'data-total': b.total },
      s('title', null, `${slotFmt.format(d)}: ${b.total} requests (${describe(b)})`));
    let acc = 0;
    for (const c of CLASSES) {
      if (!b[c]) continue;
      const y0 = y(acc);
      acc += b[c];
      g.append(s('rect', { class: `bar bar-${c}`, x: x + gap / 2, y: Math.min(y(acc), y0 - 1), width: bw - gap,
        height: Math.max(y0 - y(acc), 1), 'data-count': b[c] }));
    }
    svg.append(g);
  });
  if (!max) {
    svg.append(s('text', { class: 'nodata', x: m.left + pw / 2, y: m.top + ph / 2, 'text-anchor': 'middle' },
      'No requests in the last 48 hours'));
  }
  return svg;
}

function sum(slots) {
  const t = { total: 0, '2xx': 0, '4xx': 0, '429': 0, '5xx': 0 };
  for (const b of slots) for (const k in t) t[k] += b[k];
  return t;
}

// table is the chart's numbers, for screen readers and for copying.
function table(slots) {
  const rows = slots.filter((b) => b.total).reverse();
  if (!rows.length) return h('p', { class: 'hint' }, 'No requests.');
  return h('table', { class: 'list compact' },
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Hour'), CLASSES.map((c) => h('th', { scope: 'col', class: 'num' }, c)),
      h('th', { scope: 'col', class: 'num' }, 'Total'))),
    h('tbody', null, rows.map((b) => h('tr', null, h('td', { 'data-label': 'Hour' }, slotFmt.format(new Date(b.t))),
      CLASSES.map((c) => h('td', { 'data-label': c, class: 'num' }, b[c])), h('td', { 'data-label': 'Total', class: 'num' }, b.total)))));
}

// usageSection is the usage section of the buckets url answers, a chart per
// env of envs; it answers the section and a function that stops its timer.
export function usageSection(url, envs, hint) {
  let buckets = null;
  const err = errorBox();
  const refresh = h('button', { type: 'button', class: 'ghost small', id: 'usage-refresh' }, 'Refresh');
  const charts = h('div', { class: 'charts' });
  const section = h('section', { 'aria-labelledby': 'usage-h' },
    h('div', { class: 'section-head' }, h('h2', { id: 'usage-h' }, 'Usage'), refresh),
    h('p', { class: 'hint' }, hint),
    h('ul', { class: 'legend', 'aria-label': 'Legend' },
      CLASSES.map((c) => h('li', null, h('span', { class: `swatch bar-${c}` }), `${c} ${NAMES[c]}`))),
    err, charts);

  function draw() {
    if (!buckets) return;
    const width = Math.max(charts.clientWidth - 26, 260); // the figure's padding and border
    const open = new Set([...charts.querySelectorAll('details[open]')].map((d) => d.parentNode.id));
    charts.replaceChildren(...envs.map((env) => {
      const slots = series(buckets, env);
      const t = sum(slots);
      return h('figure', { class: 'chart-card', id: `usage-${env}` },
        h('figcaption', null, h('h3', null, env === 'live' ? 'Live' : 'Test'),
          h('span', { class: 'hint totals' }, `${t.total} requests: ${describe(t)}`)),
        chart(env, slots, width),
        h('details', { open: open.has(`usage-${env}`) }, h('summary', null, 'Show as table'), table(slots)));
    }));
  }

  let seen = '';
  async function load() {
    try {
      buckets = (await api('GET', url)).buckets;
      hideError(err);
      const now = JSON.stringify(buckets) + Math.floor(Date.now() / HOUR);
      if (now !== seen) draw(); // redraw only on news, so an open table keeps its focus
      seen = now;
    } catch (e) {
      showError(err, e);
    }
  }

  let width = 0;
  const resized = new ResizeObserver(() => {
    if (charts.clientWidth !== width) {
      width = charts.clientWidth;
      draw();
    }
  });
  resized.observe(charts);
  refresh.addEventListener('click', () => busy(refresh, load));
  load();
  const timer = setInterval(() => document.hidden || load(), EVERY);
  return [section, () => {
    clearInterval(timer);
    resized.disconnect();
  }];
}

export function usagePage(view, { org }) {
  const [section, stop] = usageSection(path('orgs', org.id, 'usage') + `?hours=${HOURS}`, ['live', 'test'],
    'Requests per hour over the last 48 hours, by status class, in your local time. Live traffic is what a bill would count; test traffic is kept apart.');
  view.append(section);
  return stop;
}
