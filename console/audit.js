// The audit log: who changed what, newest first, with filters for actor,
// action and target and "Load older" with the cursor. An organization's
// entries, or every entry for root (org null). The filters are kept in the
// URL, so a reload or a link keeps them.
import { api, path, pager } from './api.js';
import { h, field, select, errorBox, showError, busy, fullTime, reporting } from './dom.js';

const PAGE = 50;

// The actions of audit.go's auditActions; the last five belong to no
// organization.
const ACTIONS = ['org.created', 'key.created', 'key.updated', 'key.disabled', 'key.enabled', 'key.revoked', 'key.rolled',
  'admin_token.created', 'admin_token.revoked', 'admin_token.rolled',
  'root_token.created', 'root_token.set', 'root_token.reset', 'root_token.rolled', 'backup.taken'];
const ORG_ACTIONS = ACTIONS.slice(0, 10);

const FILTERS = ['actor', 'action', 'target'];

const day = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

export function auditPage(view, { org, params, session }) {
  const base = org ? path('orgs', org.id, 'audit') : '/audit';
  const here = org ? `#/orgs/${encodeURIComponent(org.id)}/audit` : '#/audit';
  const names = new Map(); // record id -> its name, for the targets
  for (const o of session.orgs) names.set(o.id, o.name);
  let next = null;
  let shown = 0;
  let stopped = false;

  const actorSel = select('audit-actor', [['', 'Anyone'], ['root', 'Root admin'], ['system', 'keyhole itself (system)']], '');
  const actionSel = select('audit-action', [['', 'Any action'], ...(org ? ORG_ACTIONS : ACTIONS).map((a) => [a, a])], '');
  const target = h('input', { type: 'text', id: 'audit-target', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', placeholder: 'key_… or tok_…' });
  const clear = h('button', { type: 'button', class: 'ghost small', id: 'audit-clear', hidden: true }, 'Clear filters');
  const refresh = h('button', { type: 'button', class: 'ghost small', id: 'audit-refresh' }, 'Refresh');
  const err = errorBox();
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true });
  const older = h('button', { type: 'button', id: 'audit-older', hidden: true }, 'Load older');
  const controls = { actor: actorSel, action: actionSel, target };

  if (!org) {
    view.append(h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Audit log'),
      h('p', { class: 'hint' }, 'Every organization’s changes, and those of no organization: the root token’s and backups.')));
  }
  view.append(h('section', { 'aria-labelledby': 'audit-h' },
    h('div', { class: 'section-head' }, h('h2', { id: 'audit-h' }, org ? 'Audit log' : 'All entries'), clear, refresh),
    h('p', { class: 'hint' }, 'Every change made through the admin API: who, what, to which records and which fields (never their values), from where.',
      org && !session.root ? ' The root admin’s changes show without their client address.' : null),
    h('form', { class: 'filters', id: 'audit-filters', onsubmit: (ev) => ev.preventDefault() },
      field('Actor', actorSel), field('Action', actionSel), field('Target', target, 'A record id, e.g. a key’s or a token’s.')),
    err,
    h('table', { class: 'list audit', id: 'audit-table' },
      h('thead', null, h('tr', null, ['Time', 'Actor', 'Action', 'Targets', 'Fields', org ? null : 'Organization', 'From']
        .filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
      tbody),
    empty, h('div', { class: 'actions' }, older)));

  // option makes sure sel offers value, so that setting it sticks.
  function option(sel, value, text = value) {
    if (!value) return;
    const o = [...sel.options].find((x) => x.value === value);
    if (!o) sel.append(h('option', { value }, text));
    else if (o.textContent === value) o.textContent = text; // now with its name
  }

  const filters = () => Object.fromEntries(FILTERS.map((f) => [f, controls[f].value.trim()]).filter(([, v]) => v));

  // filterBy sets one filter from a row, then reads the first page again.
  function filterBy(name, value, text) {
    if (name === 'actor') option(actorSel, value, text);
    controls[name].value = value;
    load();
    controls[name].focus();
  }

  // link is a row's value as a button that filters by it.
  const link = (name, value, label, text) =>
    h('button', { type: 'button', class: 'link', 'data-filter': name, title: `Show only the entries of ${value}`,
      onclick: () => filterBy(name, value, text) }, label);

  function actorCell(e) {
    if (e.actor === 'root') return link('actor', 'root', 'Root admin');
    if (e.actor === 'system') return [link('actor', 'system', 'keyhole'), e.actor_name ? h('span', { class: 'muted' }, ` (${e.actor_name})`) : null];
    return [link('actor', e.actor, e.actor_name || e.actor, e.actor_name && `${e.actor_name} (${e.actor})`),
      ' ', h('code', { class: 'muted' }, e.actor)];
  }

  function targetsCell(ids) {
    if (!ids.length) return h('span', { class: 'muted' }, '—');
    return h('ul', { class: 'plain' }, ids.map((id) => h('li', null,
      link('target', id, [names.has(id) ? names.get(id) + ' ' : null, h('code', null, id)]))));
  }

  function orgCell(id) {
    if (!id) return h('span', { class: 'muted' }, '—');
    return h('a', { href: `#/orgs/${encodeURIComponent(id)}/audit` }, names.get(id) || id);
  }

  const dash = (v, f = (x) => x) => (v ? f(v) : h('span', { class: 'muted' }, '—'));

  function row(e) {
    return h('tr', { 'data-id': e.id, 'data-action': e.action },
      h('td', { 'data-label': 'Time' }, h('time', { datetime: e.time, title: fullTime(e.time) },
        day.format(new Date(e.time)), h('br'), clock.format(new Date(e.time)))),
      h('td', { 'data-label': 'Actor', class: 'actor' }, h('span', null, actorCell(e))),
      h('td', { 'data-label': 'Action' }, h('code', { class: 'action' }, e.action)),
      h('td', { 'data-label': 'Targets', class: 'targets' }, targetsCell(e.target_ids)),
      h('td', { 'data-label': 'Fields' }, dash(e.fields.length, () => h('span', null, e.fields.map((f) => h('code', { class: 'scope' }, f))))),
      org ? null : h('td', { 'data-label': 'Organization' }, orgCell(e.org_id)),
      h('td', { 'data-label': 'From', class: 'from' }, e.client || e.request_id
        ? h('span', { class: 'lines' }, e.client ? h('span', { class: 'client', title: 'Client address' }, e.client) : null,
          e.request_id ? h('code', { class: 'muted', title: 'Request ID' }, e.request_id) : null)
        : dash(null)));
  }

  function query(before) {
    const q = new URLSearchParams({ limit: PAGE, ...filters() });
    if (before) q.set('before', before);
    return `${base}?${q}`;
  }
  const pages = pager(query);

  function showState() {
    older.hidden = !next;
    empty.hidden = shown > 0;
    empty.textContent = clear.hidden ? 'No changes recorded yet.' : 'No entries match these filters.';
  }

  // showFilters puts the filters in the URL and offers to clear them.
  function showFilters() {
    const q = new URLSearchParams(filters()).toString();
    clear.hidden = !q;
    history.replaceState(null, '', here + (q ? '?' + q : ''));
  }

  const update = reporting(err, showState);

  // load replaces the list with the newest page.
  const load = update(async () => {
    if (stopped) return false;
    pages.reset();
    showFilters();
    const page = await pages.get();
    if (!page) return false;
    next = page.next;
    shown = page.entries.length;
    tbody.replaceChildren(...page.entries.map(row));
  });

  const loadOlder = update(async () => {
    const page = await pages.get(next);
    if (!page) return false;
    next = page.entries.length ? page.next : null;
    shown += page.entries.length;
    tbody.append(...page.entries.map(row));
  });

  // learnNames reads the names of the org's keys and tokens, for the
  // targets, and offers the tokens as actors.
  async function learnNames() {
    if (!org) return;
    try {
      const [{ keys }, { admin_tokens: tokens }] = await Promise.all([
        api('GET', path('orgs', org.id, 'keys') + '?include_revoked=true'),
        api('GET', path('orgs', org.id, 'admin-tokens') + '?include_revoked=true')]);
      for (const k of keys) names.set(k.id, k.name);
      for (const t of tokens.toSorted((a, b) => a.name.localeCompare(b.name) || a.created_at.localeCompare(b.created_at))) {
        names.set(t.id, t.name);
        option(actorSel, t.id, `${t.name} (${t.prefix || t.id})${t.revoked_at ? ', revoked' : ''}`);
      }
    } catch (e) {
      showError(err, e);
    }
  }

  older.addEventListener('click', () => busy(older, loadOlder));
  refresh.addEventListener('click', () => busy(refresh, async () => {
    await learnNames();
    await load();
  }));
  for (const c of Object.values(controls)) c.addEventListener('change', load);
  clear.addEventListener('click', () => {
    for (const c of Object.values(controls)) c.value = '';
    load();
    actorSel.focus();
  });

  (async () => {
    await learnNames();
    option(actorSel, params.get('actor') || '');
    for (const f of FILTERS) controls[f].value = params.get(f) || '';
    await load();
  })();
  // Once the page is gone, an answer changes nothing, the URL included.
  return () => {
    stopped = true;
    pages.reset();
  };
}
