// An organization's API keys: create with a one-time reveal, list, revoke, roll.
import { api, path } from './api.js';
import { h, field, errorBox, showError, hideError, busy, when, refreshTimes, fullTime } from './dom.js';
import { reveal, confirm } from './widgets.js';

export function status(key, now = Date.now()) {
  if (key.revoked_at) return 'revoked';
  if (key.expires_at && Date.parse(key.expires_at) <= now) return 'expired';
  return 'active';
}

const words = (text) => text.split(/[\s,]+/).filter(Boolean);

// parseLimits reads "5/1m, 100/1h" into rate_limits; the server checks the windows.
function parseLimits(text) {
  return words(text).map((w) => {
    const m = /^(\d+)\/(\w+)$/.exec(w);
    if (!m) throw { message: `Rate limit "${w}" must look like 5/1m or 100/1h (requests per window).` };
    return { limit: Number(m[1]), window: m[2] };
  });
}

const limitsText = (limits) => (limits || []).map((l) => `${l.limit}/${l.window}`).join(', ');

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

  view.append(slot,
    h('section', { class: 'card', 'aria-labelledby': 'new-key-h' }, h('h2', { id: 'new-key-h' }, 'Create an API key'), form),
    h('section', { 'aria-labelledby': 'keys-h' },
      h('div', { class: 'section-head' }, h('h2', { id: 'keys-h' }, 'API keys'), envFilter, refresh),
      listErr,
      h('table', { class: 'list keys', id: 'keys-table' },
        h('thead', null, h('tr', null, ['Name', 'Prefix', 'Env', 'Scopes', 'Created', 'Last used', 'Status']
          .map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        tbody),
      empty));

  function row(k) {
    const st = status(k);
    const logs = h('a', { class: 'button small ghost', href: `#/orgs/${encodeURIComponent(org.id)}/logs?key_id=${encodeURIComponent(k.id)}` }, 'Logs');
    const actions = st === 'revoked' ? [logs] : [logs,
      st === 'active' ? h('button', { type: 'button', class: 'small roll', onclick: () => roll(k) }, 'Roll') : null,
      h('button', { type: 'button', class: 'small danger revoke', onclick: () => revoke(k) }, 'Revoke')];
    return h('tr', { 'data-key': k.id, 'data-status': st, class: st },
      h('td', { 'data-label': 'Name', class: 'strong' }, k.name),
      h('td', { 'data-label': 'Prefix' }, h('code', null, k.prefix)),
      h('td', { 'data-label': 'Env' }, h('span', { class: 'env ' + k.env }, k.env)),
      h('td', { 'data-label': 'Scopes' }, k.scopes.length ? h('span', null, k.scopes.map((sc) => h('code', { class: 'scope' }, sc))) : h('span', { class: 'muted' }, 'none')),
      h('td', { 'data-label': 'Created' }, when(k.created_at)),
      h('td', { 'data-label': 'Last used', class: 'last-used' }, k.last_used_at ? when(k.last_used_at) : h('span', { class: 'muted' }, 'never')),
      h('td', { 'data-label': 'Status' }, h('span', { class: 'badge ' + st, title: statusTitle(k, st) }, st)),
      h('td', { class: 'actions-cell' }, actions));
  }

  function statusTitle(k, st) {
    if (st === 'revoked') return 'Revoked ' + fullTime(k.revoked_at);
    if (k.expires_at) return (st === 'expired' ? 'Expired ' : 'Expires ') + fullTime(k.expires_at);
    return 'Rate limits: ' + limitsText(k.rate_limits);
  }

  function show() {
    const shown = keys.filter((k) => !filter || k.env === filter);
    tbody.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
    empty.textContent = filter ? `No ${filter} keys.` : 'No keys yet. Create the first one above.';
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

  function revealKey(k, title) {
    reveal(slot, { title, secret: k.key, note: `Copy this ${k.env} key for “${k.name}” now.` });
  }

  function revoke(k) {
    confirm({
      title: `Revoke “${k.name}”?`,
      body: h('p', null, 'Requests with ', h('code', null, k.prefix + '…'),
        ' will be refused at once with 401. The key stays listed as revoked. This cannot be undone.'),
      label: 'Revoke key',
      danger: true,
      action: async () => {
        await api('POST', `${base}/${encodeURIComponent(k.id)}/revoke`);
        await load();
        tbody.querySelector(`tr[data-key="${CSS.escape(k.id)}"] a`)?.focus();
      },
    });
  }

  function roll(k) {
    const grace = h('select', { id: 'roll-grace', value: '0s' },
      [['0s', 'Stops working now'], ['1h', 'Keeps working for 1 hour'], ['24h', 'Keeps working for 24 hours'], ['168h', 'Keeps working for 7 days']]
        .map(([v, t]) => h('option', { value: v }, t)));
    confirm({
      title: `Roll “${k.name}”?`,
      body: h('p', null, 'A new key with the same name, environment, scopes, limits and expiry is issued and shown once.'),
      fields: field('The current key', grace),
      label: 'Roll key',
      action: async () => {
        const fresh = await api('POST', `${base}/${encodeURIComponent(k.id)}/roll`, { expires_in: grace.value });
        revealKey(fresh, 'Your rolled API key');
        await load();
      },
    });
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
        revealKey(k, 'Your new API key');
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
  refresh.addEventListener('click', () => busy(refresh, load));

  load();
  const tick = setInterval(() => refreshTimes(tbody), 20000);
  return () => clearInterval(tick);
}
