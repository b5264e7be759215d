// An organization's request log: newest first, filters, "load older" with the
// cursor, and new entries fetched by themselves every few seconds.
import { api, path, pager } from './api.js';
import { h, field, select, errorBox, showError, busy, fullTime, reporting } from './dom.js';

const PAGE = 50;
const EVERY = 4000;

const clock = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });

// logSection is an organization's log, or with key (a key record) that
// key's alone, with no key and env columns; it answers the section and a
// function that stops its timer.
export function logSection(org, params, key) {
  const base = path('orgs', org.id);
  const names = new Map(); // key id -> key record, for names in the table
  let entries = [];
  let next = null;

  const keySel = key ? null : select('log-key', [['', 'All keys']], params.get('key_id') || '');
  const envSel = key ? null : select('log-env', [['', 'Test and live'], ['test', 'Test'], ['live', 'Live']], params.get('env') || '');
  const statusSel = select('log-status', [['', 'Any status'], ['2xx', '2xx success'], ['4xx', '4xx client error'],
    ['401', '401 unauthorized'], ['403', '403 forbidden'], ['404', '404 not found'], ['429', '429 rate limited'],
    ['5xx', '5xx server error']], params.get('status') || '');
  const filterSels = [keySel, envSel, statusSel].filter(Boolean);
  const auto = h('input', { type: 'checkbox', id: 'log-auto', checked: true });
  const err = errorBox();
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true });
  const older = h('button', { type: 'button', id: 'log-older', hidden: true }, 'Load older');
  const note = h('p', { class: 'hint', id: 'log-updated', 'aria-live': 'off' });

  const section = h('section', { 'aria-labelledby': 'logs-h' },
    h('div', { class: 'section-head' }, h('h2', { id: 'logs-h' }, key ? 'Log' : 'API logs'),
      h('label', { class: 'check' }, auto, ' Refresh every few seconds')),
    h('form', { class: 'filters', id: 'log-filters', onsubmit: (ev) => ev.preventDefault() },
      keySel && field('Key', keySel), envSel && field('Environment', envSel), field('Status', statusSel)),
    err,
    h('table', { class: 'list logs', id: 'logs-table' },
      h('thead', null, h('tr', null, ['Time', 'Status', 'Method', 'Path', !key && 'Key', !key && 'Env', 'Latency', 'Request ID']
        .filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
      tbody),
    empty, h('div', { class: 'actions' }, older), note);

  function keyCell(id) {
    if (!id) return h('span', { class: 'muted' }, '—');
    const k = names.get(id);
    return k ? h('span', { title: id }, k.name, ' ', h('code', { class: 'muted prefix' }, k.prefix)) : h('code', null, id);
  }

  function row(e, fresh) {
    const cls = e.status === 429 ? '429' : String(e.status)[0] + 'xx';
    return h('tr', { 'data-id': e.id, 'data-node': e.node, title: e.node ? `Served by ${e.node}` : null, class: fresh ? 'fresh' : null },
      h('td', { 'data-label': 'Time' }, h('time', { datetime: e.time, title: fullTime(e.time) }, clock.format(new Date(e.time)))),
      h('td', { 'data-label': 'Status' }, h('span', { class: `badge s${cls}` }, e.status)),
      h('td', { 'data-label': 'Method' }, e.method),
      h('td', { 'data-label': 'Path', class: 'path' }, h('code', null, e.path)),
      key ? null : h('td', { 'data-label': 'Key' }, keyCell(e.key_id)),
      key ? null : h('td', { 'data-label': 'Env' }, e.env ? h('span', { class: 'env ' + e.env }, e.env) : '—'),
      h('td', { 'data-label': 'Latency', class: 'num' }, `${e.latency_ms} ms`),
      h('td', { 'data-label': 'Request ID' }, h('code', { class: 'muted' }, e.request_id)));
  }

  function query(before) {
    const q = new URLSearchParams({ limit: PAGE });
    if (before) q.set('before', before);
    const keyID = key ? key.id : keySel.value;
    if (keyID) q.set('key_id', keyID);
    if (envSel?.value) q.set('env', envSel.value);
    if (statusSel.value) q.set('status', statusSel.value);
    return `${base}/logs?${q}`;
  }

  function showState() {
    older.hidden = !next;
    empty.hidden = entries.length > 0;
    empty.textContent = filterSels.some((sel) => sel.value)
      ? 'No requests match these filters.'
      : `No requests yet. Requests made with ${key ? 'this key' : 'this organization’s keys'} show up here within seconds.`;
    note.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  }

  const pages = pager(query);

  const update = reporting(err, showState);

  // load replaces the list with the newest page.
  const load = update(async () => {
    pages.reset();
    const page = await pages.get();
    if (!page) return false;
    entries = page.entries;
    next = page.next;
    tbody.replaceChildren(...entries.map((e) => row(e)));
  });

  // newest is the highest entry id shown of each node: ids count on each
  // node of a cluster apart (an entry names its node there; none on one).
  function newest(list) {
    const ids = new Map();
    for (const e of list) ids.set(e.node || '', Math.max(ids.get(e.node || '') || 0, Number(e.id)));
    return ids;
  }

  // poll puts entries newer than those shown on top, keeping older pages.
  let polling = false;
  const fetchNew = update(async () => {
    const page = await pages.get();
    if (!page) return false;
    const shown = newest(entries);
    const fresh = page.entries.filter((e) => Number(e.id) > (shown.get(e.node || '') || 0));
    if (!entries.length || (fresh.length === page.entries.length && page.next)) {
      const had = entries.length > 0;
      entries = page.entries; // empty before, or more arrived than a page holds: start over
      next = page.next;
      tbody.replaceChildren(...entries.map((e) => row(e, had)));
    } else if (fresh.length) {
      entries = fresh.concat(entries);
      tbody.prepend(...fresh.map((e) => row(e, true)));
    }
  });
  async function poll() {
    if (polling || document.hidden || !auto.checked) return;
    polling = true;
    await fetchNew();
    polling = false;
  }

  const loadOlder = update(async () => {
    const page = await pages.get(next);
    if (!page) return false;
    entries = entries.concat(page.entries);
    next = page.entries.length ? page.next : null;
    tbody.append(...page.entries.map((e) => row(e)));
  });
  older.addEventListener('click', () => busy(older, loadOlder));
  for (const sel of filterSels) sel.addEventListener('change', load);

  (async () => {
    if (key) {
      await load();
      return;
    }
    try {
      const { keys } = await api('GET', path('orgs', org.id, 'keys') + '?include_revoked=true');
      for (const k of keys.toSorted((a, b) => a.name.localeCompare(b.name))) {
        names.set(k.id, k);
        keySel.append(h('option', { value: k.id }, `${k.name} (${k.prefix})${k.revoked_at ? ', revoked' : ''}`));
      }
      keySel.value = params.get('key_id') || '';
    } catch (e) {
      showError(err, e);
    }
    await load();
  })();
  const timer = setInterval(poll, EVERY);
  return [section, () => clearInterval(timer)];
}

export function logsPage(view, { org, params }) {
  const [section, stop] = logSection(org, params);
  view.append(section);
  return stop;
}
