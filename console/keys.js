// An organization's API keys: create with a one-time reveal, list, search,
// revoke, roll; a key's name opens its page (key.js).
import { api, path } from './api.js';
import { h, field, muted, errorBox, showError, hideError, busy, when, refreshTimes, fullTime } from './dom.js';
import { reveal, confirm, graceSelect } from './widgets.js';

// status is a key's or an admin token's state, in the order the server
// checks them (README, "The order of the checks").
export function status(key, now = Date.now()) {
  if (key.revoked_at) return 'revoked';
  if (key.enabled === false) return 'disabled';
  if (key.expires_at && Date.parse(key.expires_at) <= now) return 'expired';
  return 'active';
}

export const words = (text) => text.split(/[\s,]+/).filter(Boolean);

// parseLimits reads "5/1m, 100/1h" into rate_limits; the server checks the windows.
export function parseLimits(text) {
  return words(text).map((w) => {
    const m = /^(\d+)\/(\w+)$/.exec(w);
    if (!m) throw { message: `Rate limit "${w}" must look like 5/1m or 100/1h (requests per window).` };
    return { limit: Number(m[1]), window: m[2] };
  });
}

export const limitsText = (limits) => (limits || []).map((l) => `${l.limit}/${l.window}`).join(', ');

// codes is a list of scopes or CIDRs, each kept on one line, or none.
export const codes = (list, none) =>
  (list.length ? h('span', { class: 'codes' }, list.map((x) => [h('code', { class: 'scope' }, x), ' '])) : muted(none));

export const keyHref = (org, k) => `#/orgs/${encodeURIComponent(org.id)}/keys/${encodeURIComponent(k.id)}`;

// statusBadge is a key's status, with its dates on hover.
export function statusBadge(k, st = status(k)) {
  let title = 'Rate limits: ' + limitsText(k.rate_limits);
  if (st === 'revoked') title = 'Revoked ' + fullTime(k.revoked_at);
  else if (st === 'disabled') title = 'Disabled: refused until enabled again';
  else if (k.expires_at) title = (st === 'expired' ? 'Expired ' : 'Expires ') + fullTime(k.expires_at);
  return h('span', { class: 'badge ' + st, title }, st);
}

// revokeKey asks to revoke k, then calls done.
export function revokeKey(org, k, done) {
  confirm({
    title: `Revoke “${k.name}”?`,
    body: h('p', null, 'Requests with ', h('code', null, k.prefix + '…'),
      ' will be refused at once with 401. The key stays listed as revoked. This cannot be undone.'),
    label: 'Revoke key',
    danger: true,
    action: async () => {
      await api('POST', path('orgs', org.id, 'keys', k.id, 'revoke'));
      await done();
    },
  });
}

// rollKey asks to roll k with a grace period, reveals the new key in slot,
// then calls done with the new key's record.
export function rollKey(org, k, slot, done) {
  const grace = graceSelect();
  confirm({
    title: `Roll “${k.name}”?`,
    body: h('p', null, 'A new key with the same name, environment, scopes, limits and expiry is issued and shown once.'),
    fields: field('The current key', grace),
    label: 'Roll key',
    action: async () => {
      const fresh = await api('POST', path('orgs', org.id, 'keys', k.id, 'roll'), { expires_in: grace.value });
      revealKey(slot, fresh, 'Your rolled API key');
      await done(fresh);
    },
  });
}

function revealKey(slot, k, title) {
  reveal(slot, { title, secret: k.key, note: `Copy this ${k.env} key for “${k.name}” now.` });
}

function radios(name, options, checked, label) {
  return h('fieldset', { class: 'seg', id: name },
    h('legend', { class: label ? null : 'sr-only' }, label || name),
    options.map(([value, text]) => h('label', null,
      h('input', { type: 'radio', name, value, checked: value === checked }), h('span', null, text))));
}

export function keysPage(view, { org }) {
  const base = path('orgs', org.id, 'keys');
  let keys = [];
  let filter = '';
  let search = '';

  const slot = h('div', { class: 'reveal-slot' });
  const name = h('input', { type: 'text', id: 'key-name', autocomplete: 'off', maxlength: '200', placeholder: 'e.g. billing-service' });
  const scopes = h('input', { type: 'text', id: 'key-scopes', autocomplete: 'off', placeholder: 'sms:send, sms:read' });
  const limits = h('input', { type: 'text', id: 'key-limits', autocomplete: 'off', placeholder: '5/1m, 100/1h' });
  const expires = h('input', { type: 'datetime-local', id: 'key-expires' });
  const createErr = errorBox();
  const create = h('button', { type: 'submit', class: 'primary', id: 'key-create' }, 'Create key');
  const form = h('form', { id: 'key-form', class: 'grid-form', novalidate: true },
    field('Name', name),
    radios('key-env', [['test', 'Test'], ['live', 'Live']], 'test', 'Environment'),
    field('Scopes', scopes, 'Separated by commas or spaces. Empty: no scopes; * grants all.'),
    field('Rate limits', limits, 'Requests per window, e.g. 5/1m, 100/1h. Empty: the server default.'),
    field('Expires', expires, 'Optional, in your local time.'),
    h('div', { class: 'form-end' }, createErr, create));

  const listErr = errorBox();
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true });
  const envFilter = radios('key-filter', [['', 'All'], ['test', 'Test'], ['live', 'Live']], '', 'Show keys of');
  const refresh = h('button', { type: 'button', class: 'ghost small' }, 'Refresh');
  const searchBox = h('input', { type: 'search', id: 'key-search', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', placeholder: 'Search by name or prefix', 'aria-label': 'Search keys by name or prefix' });

  view.append(slot,
    h('section', { class: 'card', 'aria-labelledby': 'new-key-h' }, h('h2', { id: 'new-key-h' }, 'Create an API key'), form),
    h('section', { 'aria-labelledby': 'keys-h' },
      h('div', { class: 'section-head' }, h('h2', { id: 'keys-h' }, 'API keys'), searchBox, envFilter, refresh),
      listErr,
      h('table', { class: 'list keys', id: 'keys-table' },
        h('thead', null, h('tr', null, ['Name', 'Prefix', 'Env', 'Scopes', 'Created', 'Last used', 'Expires', 'Status']
          .map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        tbody),
      empty));

  function row(k) {
    const st = status(k);
    const logs = h('a', { class: 'button small ghost', href: `#/orgs/${encodeURIComponent(org.id)}/logs?key_id=${encodeURIComponent(k.id)}` }, 'Logs');
    const actions = st === 'revoked' ? [logs] : [logs,
      st === 'active' ? h('button', { type: 'button', class: 'small roll', onclick: () => rollKey(org, k, slot, load) }, 'Roll') : null,
      h('button', { type: 'button', class: 'small danger revoke', onclick: () => revokeKey(org, k, () => revoked(k)) }, 'Revoke')];
    return h('tr', { 'data-key': k.id, 'data-status': st, class: st },
      h('td', { 'data-label': 'Name', class: 'strong' }, h('a', { href: keyHref(org, k), class: 'key-link' }, k.name)),
      h('td', { 'data-label': 'Prefix', class: 'prefix' }, h('code', null, k.prefix)),
      h('td', { 'data-label': 'Env' }, h('span', { class: 'env ' + k.env }, k.env)),
      h('td', { 'data-label': 'Scopes' }, codes(k.scopes, 'none')),
      h('td', { 'data-label': 'Created' }, when(k.created_at)),
      h('td', { 'data-label': 'Last used', class: 'last-used' }, k.last_used_at ? when(k.last_used_at) : muted('never')),
      h('td', { 'data-label': 'Expires', class: 'expires' }, k.expires_at ? when(k.expires_at) : muted('never')),
      h('td', { 'data-label': 'Status', class: 'status' }, statusBadge(k, st)),
      h('td', { class: 'actions-cell' }, actions));
  }

  function show() {
    const q = search.trim().toLowerCase();
    const shown = keys.filter((k) => (!filter || k.env === filter) &&
      (!q || k.name.toLowerCase().includes(q) || k.prefix.toLowerCase().includes(q)));
    tbody.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
    if (q) empty.textContent = `No ${filter ? filter + ' ' : ''}keys match “${search.trim()}”.`;
    else empty.textContent = filter ? `No ${filter} keys.` : 'No keys yet. Create the first one above.';
  }

  async function load() {
    try {
      const res = await api('GET', base + '?include_revoked=true');
      keys = res.keys.toSorted((a, b) => b.created_at.localeCompare(a.created_at));
      hideError(listErr);
      show();
    } catch (e) {
      showError(listErr, e);
    }
  }

  async function revoked(k) {
    await load();
    tbody.querySelector(`tr[data-key="${CSS.escape(k.id)}"] a.button`)?.focus();
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    hideError(createErr);
    busy(create, async () => {
      try {
        const body = { name: name.value, env: form.elements['key-env'].value };
        if (scopes.value.trim()) body.scopes = words(scopes.value);
        if (limits.value.trim()) body.rate_limits = parseLimits(limits.value);
        if (expires.value) body.expires_at = new Date(expires.value).toISOString();
        const k = await api('POST', base, body);
        form.reset();
        revealKey(slot, k, 'Your new API key');
        await load();
      } catch (e) {
        showError(createErr, e);
        name.focus();
      }
    });
  });
  envFilter.addEventListener('change', (ev) => {
    filter = ev.target.value;
    show();
  });
  searchBox.addEventListener('input', () => {
    search = searchBox.value;
    show();
  });
  refresh.addEventListener('click', () => busy(refresh, load));

  load();
  const tick = setInterval(() => refreshTimes(tbody), 20000);
  return () => clearInterval(tick);
}
